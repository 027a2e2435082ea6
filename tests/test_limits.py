"""The hub-wide limits (config ``limits``): agents beyond ``running_agents`` wait as pending, saying
why; orchestrators waiting on their children give their slot back, so a deep tree under a limit of
one still finishes; model calls beyond ``model_calls`` wait; the queues show in ``GET /api/limits``."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.agents.limits import Limits
from dispatch.hub.agents.spec import AgentState
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.config.project import LimitsConfig
from dispatch.hub.events import AgentStateChanged, EventBus
from dispatch.hub.llm.client import LiteLLMClient
from tests.agent_helpers import assert_done, call, top_spec, until
from tests.api_helpers import ServedHub
from tests.chat_helpers import pending, running_hub
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.test_templates import max_overlap


def _intervals(llm: ScriptedLLM) -> list[tuple[float, float]]:
    return [(r.started_at, r.finished_at or r.started_at) for r in llm.requests]


def _script_tree(llm: ScriptedLLM) -> None:
    """A top agent with two orchestrators, each with two leaves; every model answer takes 0.1 s."""
    summon = {"summon": True}
    llm.script(
        "[top]",
        [
            Reply(tool_calls=[call("summon", task=f"[mid-{m}] split", grants=summon) for m in "ab"], delay_s=0.1),
            Reply(tool_calls=[call("wait")], delay_s=0.1),
            Reply(text="all four leaves reported", delay_s=0.1),
        ],
    )
    for m in "ab":
        llm.script(
            f"[mid-{m}]",
            [
                Reply(tool_calls=[call("summon", task=f"[leaf-{m}{n}] answer") for n in "12"], delay_s=0.1),
                Reply(tool_calls=[call("wait")], delay_s=0.1),
                Reply(text=f"{m}: both leaves reported", delay_s=0.1),
            ],
        )
        for n in "12":
            llm.script(f"[leaf-{m}{n}]", [Reply(text=f"leaf {m}{n} done", delay_s=0.1)])


@pytest.mark.anyio
async def test_one_running_slot_runs_a_deep_tree_one_agent_at_a_time(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    _script_tree(scripted_llm)
    bus = EventBus()
    queued: list[AgentStateChanged] = []
    limits = Limits(LimitsConfig(running_agents=1))
    async with bus.subscribe() as stream, AgentTree(tmp_path, LiteLLMClient(), bus, limits=limits) as tree:

        async def watch() -> None:
            async for event in stream:
                if isinstance(event.data, AgentStateChanged) and event.data.state == "pending" and event.data.reason:
                    queued.append(event.data)

        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            with anyio.fail_after(30):
                top = await tree.run(top_spec("[top] fan out"))
            group.cancel_scope.cancel()

    assert_done(top)
    assert len(tree.agents) == 7
    assert all(a.state is AgentState.done for a in tree.agents.values())
    # one agent took steps at a time: no two model calls overlapped
    assert max_overlap(_intervals(scripted_llm)) == 1
    assert queued, "no agent waited for a running slot"
    assert queued[0].reason == "queued: all 1 running slots are taken (limits.running_agents)"
    assert limits.view().running_agents == 0 and limits.view().queued_agents == 0


@pytest.mark.anyio
async def test_model_calls_beyond_the_limit_wait(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    parts = "abcd"
    scripted_llm.script(
        "[top]",
        [
            Reply(tool_calls=[call("summon", task=f"[w-{p}] answer") for p in parts]),
            Reply(tool_calls=[call("wait")]),
            Reply(text="done"),
        ],
    )
    for p in parts:
        scripted_llm.script(f"[w-{p}]", [Reply(text=p, delay_s=0.3)])
    limits = Limits(LimitsConfig(model_calls=2))
    seen_queued: list[int] = []
    async with AgentTree(tmp_path, LiteLLMClient(), limits=limits) as tree:
        top = tree.start(top_spec("[top] four at once"))
        await until(lambda: len(tree.agents) == 5)
        await until(lambda: limits.view().queued_model_calls > 0)
        seen_queued.append(limits.view().queued_model_calls)
        with anyio.fail_after(30):
            await top.finished.wait()

    assert_done(top)
    workers = [r for r in scripted_llm.requests if r.task.startswith("[w-")]
    assert len(workers) == 4
    assert max_overlap(_intervals(scripted_llm)) == 2
    assert 1 <= seen_queued[0] <= 3  # four workers and the top agent, two calls at a time
    assert limits.view().model_calls == 0


def test_the_config_sets_the_limits_and_the_api_shows_them(tmp_path: Path, served: ServedHub) -> None:
    project = tmp_path / "limited"
    (project / ".dispatch").mkdir(parents=True)
    (project / ".dispatch" / "config.yaml").write_text("limits:\n  running_agents: 3\n  model_calls: 5\n")
    assert Catalog.load(project).config.limits == LimitsConfig(running_agents=3, model_calls=5)

    (project / ".dispatch" / "config.yaml").write_text("limits:\n  running_agents: 0\n")
    with pytest.raises(Exception, match=r"config.yaml line 2: limits.running_agents: expected greater than"):
        Catalog.load(project)

    response = httpx.get(f"{served.base_url}/api/limits", headers=served.auth)
    assert response.status_code == 200
    assert response.json() == {
        "running_agents": 0,
        "running_agents_limit": 256,
        "queued_agents": 0,
        "model_calls": 0,
        "model_calls_limit": 64,
        "queued_model_calls": 0,
    }


@pytest.mark.anyio
async def test_an_agent_waiting_for_approval_gives_its_slot_to_a_sibling(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (project / ".dispatch").mkdir(parents=True)
    (project / ".dispatch" / "config.yaml").write_text("limits:\n  running_agents: 1\n")
    scripted_llm.script(
        "[top]",
        [
            Reply(
                tool_calls=[
                    call("summon", task="[careful] report after approval", template="planner"),
                    call("summon", task="[quick] answer"),
                ]
            ),
            Reply(tool_calls=[call("wait")]),
            Reply(text="both reported"),
        ],
    )
    scripted_llm.script("[careful]", [Reply(text="the plan")])
    scripted_llm.script("[quick]", [Reply(text="quick answer")])
    async with running_hub(project, tmp_path / "dispatch.db", Catalog.load(project)) as parts:
        top = parts.tree.start(top_spec("[top] two children"))
        [asked] = await pending(parts)  # the planner waits for the user at its before_report checkpoint
        careful = parts.tree.get(asked.agent_id)
        quick = next(c for c in parts.tree.children_of(top.id) if c.id != careful.id)
        with anyio.fail_after(20):
            await quick.finished.wait()  # it ran meanwhile, in the one running slot
        waiting = (careful.state, quick.state)
        await parts.approvals.answer_approval(asked.id, "approve", "once")
        with anyio.fail_after(20):
            await top.finished.wait()

    assert waiting == (AgentState.waiting_user, AgentState.done)
    assert_done(top)
    assert careful.report == "the plan"
