"""Tree budgets: a child's budget comes out of its parent's remainder, caps stop agents with
reason ``budget``, and spend rolls up the tree to the same figures as the usage ledger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatch.hub.agents.budgets import subtree_ids
from dispatch.hub.agents.spec import AgentState
from tests.agent_helpers import assert_done, call, tool_messages
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM
from tests.models_helpers import Rig, config, cost, key, model, spec

pytestmark = pytest.mark.anyio


@pytest.fixture
def rig(scripted_llm: ScriptedLLM, tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(config(key("main", "openai", scripted_llm, {"m": model("medium")})), tmp_path)
    yield rig
    rig.close()


async def test_child_budgets_come_out_of_the_parent_and_a_spent_child_stops_with_reason_budget(
    rig: Rig, scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    summons = [
        call("summon", task="[greedy] wants too much", budget_usd=1.5),
        call("summon", task="[spender] spends its cap", budget_usd=0.05, name="spender"),
    ]

    def final(request: RecordedRequest) -> Reply:
        return Reply(text="parent saw: " + tool_messages(request.messages)[-1], usage=(10, 0))

    scripted_llm.script(
        "[parent]",
        [Reply(tool_calls=summons, usage=(10, 0)), Reply(tool_calls=[call("wait")], usage=(10, 0)), final],
    )
    scripted_llm.script(
        "[spender]",
        [
            Reply(tool_calls=[call("list_dir", path=".")], usage=(30, 0)),
            Reply(tool_calls=[call("list_dir", path=".")], usage=(30, 0)),
        ],
    )

    async with rig.tree(tmp_path) as tree:
        top = await tree.run(spec("[parent] delegate within $1", "medium", budget_usd=1.0))

    assert_done(top)
    refused, started = tool_messages(scripted_llm.requests_for("[parent]")[1].messages)[:2]
    assert "summon refused: budget_usd 1.5 is more than you have left ($0.99)" in refused
    assert '"state": "started"' in started
    (child,) = tree.children_of(top.id)
    assert (child.state, child.reason) == (AgentState.failed, "budget")
    assert child.error == "budget: spent $0.06 of its $0.05 budget"
    assert child.spec.budget_usd == 0.05
    assert len(scripted_llm.requests_for("[spender]")) == 2
    told = top.report or ""
    assert '"state": "failed"' in told and '"report": "budget: spent $0.06 of its $0.05 budget"' in told

    rows = await rig.store.usage_rows()
    assert {r.agent_id for r in rows} == {top.id, child.id}
    rolled = tree.spend(top.id)
    assert rolled.cost_usd == pytest.approx(sum(r.cost_usd for r in rows)) == pytest.approx(cost(30 + 60))
    assert rolled.prompt_tokens == sum(r.tokens_in for r in rows)
    assert rolled.calls == len(rows) == 5
    by_agent = await rig.store.usage_by("agent")
    assert by_agent[child.id].cost_usd == pytest.approx(child.usage.cost_usd)
    in_subtree = await rig.store.usage_total(agent_ids=subtree_ids(tree, top.id))
    assert in_subtree.cost_usd == pytest.approx(rolled.cost_usd)


async def test_a_parent_whose_subtree_reaches_its_cap_stops_and_its_children_are_cancelled(
    rig: Rig, scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    scripted_llm.script(
        "[capped]",
        [Reply(tool_calls=[call("summon", task="[unbudgeted] spends freely", wait=True)], usage=(10, 0))],
    )
    scripted_llm.script(
        "[unbudgeted]",
        [
            Reply(tool_calls=[call("list_dir", path=".")], usage=(50, 0)),
            Reply(tool_calls=[call("list_dir", path=".")], usage=(50, 0)),
        ],
    )

    async with rig.tree(tmp_path) as tree:
        top = await tree.run(spec("[capped] stay under $0.1", "medium", budget_usd=0.1))

    (child,) = tree.children_of(top.id)
    assert (top.state, top.reason) == (AgentState.failed, "budget")
    assert top.error == "budget: spent $0.11 of its $0.1 budget"
    assert child.state is AgentState.cancelled


async def test_max_tokens_caps_an_agent(rig: Rig, scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script("[tokens]", [Reply(tool_calls=[call("list_dir", path=".")], usage=(900, 200))])

    async with rig.tree(tmp_path) as tree:
        agent = await tree.run(spec("[tokens] use many", "m", max_tokens=1000))

    assert (agent.state, agent.reason, agent.error) == (
        AgentState.failed,
        "budget",
        "budget: used 1100 of its 1000 tokens",
    )
