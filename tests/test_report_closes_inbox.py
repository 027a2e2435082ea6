"""An agent giving its report reads no more messages: from the moment it reports, a message is
refused with a clear error rather than accepted and never read (the agent's tool servers are still
closing then, so it is not finished yet). The agent loop driven step by step."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dispatch.hub.agents.inbox import InboxClosed
from dispatch.hub.agents.loop import Agent, AgentHooks
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.errors import UserError
from dispatch.hub.llm.types import Completion, JsonDict, Usage
from dispatch.hub.mounts.toolset import Mounts
from dispatch.servers.hublink import InboxMessage, MessageKind
from tests.agent_helpers import top_spec

pytestmark = pytest.mark.anyio


class _Answers:
    """A model that answers at once, without tools."""

    async def complete(
        self, model: str, messages: Sequence[JsonDict], tools: Sequence[JsonDict], *, agent_id: str | None = None
    ) -> Completion:
        return Completion(text="the report", tool_calls=[], usage=Usage(), model=model, latency_s=0.0)


def _note(text: str) -> InboxMessage:
    return InboxMessage(id="m-late", kind=MessageKind.context, text=text, sender="user", sent_at=datetime.now(UTC))


async def test_an_agent_reporting_refuses_messages_instead_of_losing_them(tmp_path: Path) -> None:
    hooks = AgentHooks(live_children=lambda: 0, on_state=lambda _: None, on_tool_call=lambda *_: None,
                       on_tool_result=lambda *_: None)  # fmt: skip
    agent = Agent(spec=top_spec("answer"), hooks=hooks)
    assert agent.reads_messages
    steps = agent.steps(Mounts({}, {}), _Answers())
    step = await anext(steps)  # the agent has given its report; the tree has not finished it yet
    assert step.report == "the report"
    assert not agent.state.terminal and not agent.reads_messages
    with pytest.raises(InboxClosed):
        agent.inbox.put(_note("too late"))
    assert len(agent.inbox) == 0

    tree = AgentTree(tmp_path, _Answers())
    tree.agents[agent.id] = agent
    with pytest.raises(UserError, match=f"agent {agent.id} is giving its report; it reads no more messages"):
        tree.put_message(agent.id, MessageKind.context, "too late")
    await steps.aclose()
