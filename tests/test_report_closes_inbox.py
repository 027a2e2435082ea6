"""An agent giving its report reads no more messages: from the moment it reports, a message is
refused with a clear error rather than accepted and never read (the agent's tool servers are still
closing then, so it is not finished yet). The agent loop driven step by step."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dispatch.hub.agents.inbox import InboxClosed
from dispatch.hub.agents.loop import Agent, AgentHooks
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.errors import UserError
from dispatch.hub.llm.scripted import Reply, Script, ScriptedModel
from dispatch.hub.mounts.toolset import Mounts
from dispatch.servers.hublink import InboxMessage, MessageKind
from tests.agent_helpers import top_spec

pytestmark = pytest.mark.anyio


def _note(text: str) -> InboxMessage:
    return InboxMessage(id="m-late", kind=MessageKind.context, text=text, sender="user", sent_at=datetime.now(UTC))


async def test_an_agent_reporting_refuses_messages_instead_of_losing_them(tmp_path: Path) -> None:
    hooks = AgentHooks(live_children=lambda: 0, on_state=lambda _: None, on_tool_call=lambda *_: None,
                       on_tool_result=lambda *_: None)  # fmt: skip
    agent = Agent(spec=top_spec("[answer]"), hooks=hooks)
    assert agent.reads_messages
    model = ScriptedModel([Script(match="[answer]", steps=[Reply(text="the report")])])  # at once, no tools
    steps = agent.steps(Mounts({}, {}), model)
    step = await anext(steps)  # the agent has given its report; the tree has not finished it yet
    assert step.report == "the report"
    assert not agent.state.terminal and not agent.reads_messages
    with pytest.raises(InboxClosed):
        agent.inbox.put(_note("too late"))
    assert len(agent.inbox) == 0

    tree = AgentTree(tmp_path, model)
    tree.agents[agent.id] = agent
    with pytest.raises(UserError, match=f"agent {agent.id} is giving its report; it reads no more messages"):
        tree.put_message(agent.id, MessageKind.context, "too late")
    await steps.aclose()
    model.assert_complete()
