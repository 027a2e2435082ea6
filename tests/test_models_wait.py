"""Agents over the key router: waiting for a key, a model switch mid-run, other agents unaffected."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from dispatch.hub.agents.spec import AgentState
from dispatch.hub.events import AgentStateChanged, Event
from dispatch.hub.policy.grants import Grants
from tests.agent_helpers import assert_done, call, until
from tests.fakes.scripted_llm import Fail, Reply, ScriptedLLM
from tests.models_helpers import Rig, config, key, model, spec

pytestmark = pytest.mark.anyio
HOUR = 3600.0


@pytest.fixture
def rig(two: tuple[ScriptedLLM, ScriptedLLM], tmp_path: Path) -> Iterator[Rig]:
    a, b = two
    rig = Rig(
        config(
            key("key-a", "openai", a, {"a-light": model("light")}),
            key("key-b", "deepseek", b, {"b-light": model("light"), "b-heavy": model("heavy")}),
            key("key-c", "openai", a, {"c-medium": model("medium")}),
            probe_interval=2 * HOUR,
        ),
        tmp_path,
    )
    yield rig
    rig.close()


async def test_all_keys_exhausted_the_agent_waits_a_sibling_finishes_then_it_resumes_intact(
    rig: Rig, two: tuple[ScriptedLLM, ScriptedLLM], tmp_path: Path
) -> None:
    a, b = two
    summons = [
        call("summon", task="[waiter] list then finish", model="light", name="waiter"),
        call("summon", task="[sibling] finish at once", model="medium", name="sibling"),
    ]
    a.script("[parent]", [Reply(tool_calls=summons), Reply(tool_calls=[call("wait")]), Reply(text="both reported")])
    a.script(
        "[waiter]",
        [Reply(tool_calls=[call("list_dir", path=".")]), Fail.rate_limit(HOUR), Reply(text="waiter done")],
    )
    b.script("[waiter]", [Fail.rate_limit(2 * HOUR)])
    a.script("[sibling]", [Reply(text="sibling done", delay_s=0.3)])

    async with rig.tree(tmp_path) as tree, tree.events.subscribe() as events:
        top = tree.start(spec("[parent] two children", "medium"))
        await until(lambda: len(tree.children_of(top.id)) == 2)
        waiter, sibling = tree.children_of(top.id)
        await until(lambda: waiter.state is AgentState.waiting_key)
        assert waiter.reason.startswith("waiting for key until ")
        assert "key-a: rate limit" in waiter.reason and "key-b: rate limit" in waiter.reason
        await until(lambda: sibling.state is AgentState.done)
        assert waiter.state is AgentState.waiting_key, "the waiter sleeps until the reset"
        transcript_while_waiting = list(waiter.transcript)

        await until(lambda: rig.clock.sleepers == 1)
        rig.clock.advance(HOUR)
        await top.finished.wait()
        seen: list[Event] = []
        with contextlib.suppress(anyio.WouldBlock):
            while True:
                seen.append(events.receive_nowait())

    assert_done(top)
    assert_done(waiter)
    assert waiter.report == "waiter done"
    waits = [e.data for e in seen if e.agent_id == waiter.id and isinstance(e.data, AgentStateChanged)]
    waits = [w for w in waits if w.state == "waiting_key"]
    assert len(waits) == 1 and waits[0].until is not None
    _, limited, resumed = a.requests_for("[waiter]")
    (refused_by_b,) = b.requests_for("[waiter]")
    assert (limited.status, refused_by_b.status, resumed.status) == (429, 429, 200)
    assert resumed.messages == limited.messages == refused_by_b.messages, "the same step was asked again"
    roles = ["system", "user", "assistant", "tool"]
    assert [m["role"] for m in resumed.messages] == [m["role"] for m in transcript_while_waiting] == roles
    assert [m.get("content") or m.get("tool_calls") for m in transcript_while_waiting] == [
        m.get("content") or m.get("tool_calls") for m in resumed.messages
    ]
    assert [m["role"] for m in waiter.transcript] == [*roles, "assistant"]
    assert a.requests_for("[sibling]")[0].model == "c-medium"


async def test_a_cancel_wakes_a_waiting_agent(rig: Rig, two: tuple[ScriptedLLM, ScriptedLLM], tmp_path: Path) -> None:
    a, b = two
    a.script("[stuck]", [Fail.quota()])
    b.script("[stuck]", [Fail.quota()])

    async with rig.tree(tmp_path) as tree:
        agent = tree.start(spec("[stuck] nothing to spend", "light", grants=Grants()))
        await until(lambda: agent.state is AgentState.waiting_key)
        assert "reset unknown" in agent.reason
        tree.cancel(agent.id)
        await agent.finished.wait()

    assert agent.state is AgentState.cancelled


async def test_a_model_switch_mid_run_reaches_the_other_provider_with_the_transcript(
    rig: Rig, two: tuple[ScriptedLLM, ScriptedLLM], tmp_path: Path
) -> None:
    a, b = two
    a.script("[switch]", [Reply(tool_calls=[call("list_dir", path=".")], delay_s=0.5)])
    b.script("[switch]", [Reply(text="finished on the heavy model")])

    async with rig.tree(tmp_path) as tree:
        agent = tree.start(spec("[switch] start light, end heavy", "light", grants=Grants()))
        await until(lambda: len(a.requests_for("[switch]")) == 1)
        tree.switch_model(agent.id, "heavy")
        await agent.finished.wait()

    assert_done(agent)
    (before,) = a.requests_for("[switch]")
    (after,) = b.requests_for("[switch]")
    assert (before.model, after.model) == ("a-light", "b-heavy")
    assert after.messages[: len(before.messages)] == before.messages
    assert [m["role"] for m in after.messages] == ["system", "user", "assistant", "tool"]
    assert agent.model == "heavy"
