"""The hub's lifecycle against a real hub process (``tests/hub_process.py``) and the scripted model:
SIGKILL during a run loses nothing acknowledged and leaves resumable ``interrupted`` agents;
SIGTERM stops within the deadline with every agent done or interrupted; a second hub on the same
data directory is refused, naming the first one's pid and address."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from dispatch.hub.service.hub import Hub
from dispatch.hub.service.lifecycle import HubRunning, running_hub
from dispatch.hub.store.db import DB_NAME, Store
from tests.agent_helpers import call, last_tool_json, until
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM
from tests.hub_helpers import HubProcess, dirs, start_hub_process

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _agent_of(hub: HubProcess, match: str) -> str:
    spawned = hub.wait_for(lambda x: x.get("type") == "agent.spawned" and match in x["data"]["task"])
    return str(spawned["agent"])


def _state(hub: HubProcess, agent_id: str, state: str) -> dict[str, Any]:
    return hub.wait_for(
        lambda x: x.get("type") == "agent.state" and x["agent"] == agent_id and x["data"]["state"] == state
    )


async def test_sigkill_loses_nothing_acknowledged_and_an_interrupted_tree_resumes(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    root, data = dirs(tmp_path)
    summons = [call("summon", task=f"[kill-{x}] write {x}/out.txt", scope=[x], name=f"kill-{x}") for x in "ab"]

    def final(request: RecordedRequest) -> Reply:
        finished = last_tool_json(request.messages)["finished"]
        return Reply(text="top saw: " + "; ".join(sorted(c["report"] for c in finished)))

    scripted_llm.script(
        "[kill-top]",
        [Reply(tool_calls=summons), Reply(tool_calls=[call("wait")]), Reply(tool_calls=[call("wait")]), final],
    )
    scripted_llm.script(
        "[kill-a]", [Reply(tool_calls=[call("write_file", path="a/out.txt", content="a\n")]), Reply(text="a done")]
    )
    scripted_llm.script(
        "[kill-b]",
        [Reply(text="lost with the hub", delay_s=4), Reply(text="b draft"), Reply(text="b done")],
    )

    hub = start_hub_process(root, data, "[kill-top] split in two", "--message", "[kill-b]=Use the docs folder.")
    top = str(hub.wait_for(lambda x: "ready" in x)["ready"])
    a, b = _agent_of(hub, "[kill-a]"), _agent_of(hub, "[kill-b]")
    acked = hub.wait_for(lambda x: "ack" in x)
    _state(hub, a, "done")
    _state(hub, top, "waiting_children")
    await until(lambda: len(scripted_llm.requests_for("[kill-b]")) == 1, timeout_s=30)
    hub.signal(signal.SIGKILL)
    assert hub.finish() == -signal.SIGKILL
    announced = hub.events()

    async with Hub.open(root, data) as reopened:
        views = {v.id: v for v in (await reopened.agents())}
        assert {i: v.state for i, v in views.items()} == {top: "interrupted", a: "done", b: "interrupted"}
        assert sorted(reopened.interrupted_on_open) == sorted([top, b])
        assert "after step 1" in views[top].reason and views[b].steps == 0
        kept = {(e.seq, e.type, e.agent_id) for e in await _all_events(reopened)}
        assert {(e["seq"], e["type"], e["agent"]) for e in announced} <= kept, "an announced event was lost"
        resumed = await reopened.resume(top)
        assert resumed.state in ("pending", "running")
        with pytest.raises(HubRunning):
            async with Hub.open(root, data):
                pass
        done = await reopened.wait_finished(top)
        b_view = reopened.view(b)

    assert done.state == "done", done
    assert done.report == "top saw: a done; b done"
    assert b_view.state == "done" and b_view.report == "b done"
    last_b = scripted_llm.requests_for("[kill-b]")[-1].messages
    assert any("Use the docs folder." in str(m["content"]) and acked["ack"] in str(m["content"]) for m in last_b)
    top_requests = scripted_llm.requests_for("[kill-top]")
    assert top_requests[2].messages == top_requests[1].messages, "the top resumed from its last persisted step"
    assert (root / "a" / "out.txt").read_text() == "a\n"


async def _all_events(hub: Hub) -> list[Any]:
    found: list[Any] = []
    async with hub.follow_events(0) as events:
        async for event in events:
            found.append(event)
            if event.seq >= hub.last_event_id:
                break
    return found


async def test_sigterm_lets_the_running_step_finish_and_exits_zero_with_every_agent_done_or_interrupted(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    root, data = dirs(tmp_path)
    scripted_llm.script("[term-top]", [Reply(tool_calls=[call("summon", task="[term-child] slow work", wait=True)])])
    scripted_llm.script("[term-child]", [Reply(tool_calls=[call("list_dir", path=".")], delay_s=2.0)])

    hub = start_hub_process(root, data, "[term-top] delegate", "--deadline", "8", "--address", "http://127.0.0.1:8421")
    top = str(hub.wait_for(lambda x: "ready" in x)["ready"])
    child = _agent_of(hub, "[term-child]")
    await until(lambda: len(scripted_llm.requests_for("[term-child]")) == 1, timeout_s=30)

    info = running_hub(data)
    assert info is not None and info.pid == hub.process.pid and info.address == "http://127.0.0.1:8421"
    with pytest.raises(HubRunning) as refused:
        async with Hub.open(root, data):
            pass
    assert f"pid {hub.process.pid}" in str(refused.value) and "http://127.0.0.1:8421" in str(refused.value)

    sent_at = time.monotonic()
    hub.signal(signal.SIGTERM)
    code = hub.finish(timeout_s=60)
    took = time.monotonic() - sent_at

    assert code == 0, "".join(hub.stderr)
    assert took < 8 + 10, f"stopping took {took:.1f} s"
    assert hub.wait_for(lambda x: "exit" in x)["exit"] == 0
    assert running_hub(data) is None
    child_step = hub.wait_for(lambda x: x.get("type") == "agent.step" and x["agent"] == child)
    assert child_step["data"]["index"] == 1, "the running step was let finish"
    async with Store.open(data / DB_NAME) as store:
        states = {r["id"]: r["state"] for r in store.db.query("select id, state from agents")}
    assert states == {top: "interrupted", child: "interrupted"}


async def test_a_second_signal_exits_at_once_and_loses_nothing_acknowledged(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    root, data = dirs(tmp_path)
    scripted_llm.script("[twice]", [Reply(text="too slow to wait for", delay_s=6), Reply(text="done after resume")])

    hub = start_hub_process(root, data, "[twice] slow", "--deadline", "30")
    top = str(hub.wait_for(lambda x: "ready" in x)["ready"])
    await until(lambda: len(scripted_llm.requests_for("[twice]")) == 1, timeout_s=30)
    hub.signal(signal.SIGTERM)
    await until(lambda: any("stopping" in line for line in hub.stderr), timeout_s=30)
    sent_at = time.monotonic()
    hub.signal(signal.SIGTERM)
    code = hub.finish(timeout_s=30)

    assert code == 128 + signal.SIGTERM
    assert time.monotonic() - sent_at < 5, "the second signal did not exit at once"
    async with Hub.open(root, data) as reopened:
        assert reopened.interrupted_on_open == [top]
        kept = {(e.seq, e.type) for e in await _all_events(reopened)}
        assert {(e["seq"], e["type"]) for e in hub.events()} <= kept
        await reopened.resume(top)
        assert (await reopened.wait_finished(top)).report == "done after resume"
