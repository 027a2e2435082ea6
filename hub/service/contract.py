"""The hub's face toward its interfaces: :class:`HubService`, everything the HTTP API, the web UI,
the MCP server and the CLI may ask. ``dispatch.hub.service.hub.Hub`` implements it over the
store, the event bus and the tree; the shapes it answers with are :mod:`dispatch.hub.views`.
Interfaces depend on this contract and the views, never on the tree's internals.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from dispatch.hub.agents.spec import NO_CAPS, Caps
from dispatch.hub.events import Event
from dispatch.hub.views import (
    AgentChanges,
    AgentDetail,
    AgentView,
    ApprovalView,
    ArtifactView,
    ChatDetail,
    ChatMessageView,
    ChatView,
    Decision,
    HubView,
    LimitsView,
    Remember,
    RewindView,
    ThreadDetail,
    ThreadMessageView,
    ThreadView,
    ToolServerView,
    UsageView,
)
from dispatch.servers.hublink import MessageKind


class HubService(Protocol):
    """Everything an interface may do. Unknown ids raise ``UnknownAgentError`` (or another
    ``UserError`` naming the id); bad input raises ``UserError`` saying what is wrong (a cap of
    ``caps`` that is not a positive number: naming the field)."""

    # agents
    async def agents(self) -> list[AgentView]: ...
    async def agents_json(self) -> bytes: ...
    async def agent(self, agent_id: str) -> AgentDetail: ...
    async def send(self, agent_id: str, text: str, kind: MessageKind) -> str: ...
    async def switch_model(self, agent_id: str, model: str) -> None: ...
    async def cancel(self, agent_id: str) -> AgentView: ...
    async def compact(self, agent_id: str) -> AgentView: ...
    async def resume(self, agent_id: str) -> AgentView: ...
    async def changes(self, agent_id: str, own: bool = False) -> AgentChanges: ...
    async def rewind(self, agent_id: str, force: bool = False, undo: bool = False) -> RewindView: ...
    async def start(
        self,
        task: str,
        *,
        template: str | None = None,
        model: str | None = None,
        detached: bool = False,
        root: str | None = None,
        caps: Caps = NO_CAPS,
    ) -> AgentView: ...

    # chats
    async def create_chat(
        self, title: str | None = None, root: str | None = None, caps: Caps = NO_CAPS, model: str | None = None
    ) -> ChatView: ...
    async def open_project(self, root: str) -> HubView: ...
    async def chats(
        self, query: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[ChatView]: ...
    async def chat(self, chat_id: str) -> ChatDetail: ...
    async def post_chat_message(self, chat_id: str, text: str) -> ChatMessageView: ...
    async def fork_chat(self, chat_id: str, message_id: str) -> ChatView: ...

    # detached agents' user threads (their ask_user questions and the user's answers)
    async def threads(self) -> list[ThreadView]: ...
    async def thread(self, agent_id: str) -> ThreadDetail: ...
    async def answer_thread(self, agent_id: str, text: str) -> ThreadMessageView: ...

    # approvals
    async def approvals(self, state: str | None = "pending") -> list[ApprovalView]: ...
    async def answer_approval(self, approval_id: str, decision: Decision, remember: Remember) -> ApprovalView: ...

    # artifacts and usage
    async def artifacts(self, query: str | None = None, kind: str | None = None) -> list[ArtifactView]: ...
    async def artifact(self, artifact_id: str) -> ArtifactView: ...
    async def usage(self) -> UsageView: ...
    async def tool_servers(self) -> list[ToolServerView]: ...
    def limits(self) -> LimitsView: ...
    def about(self) -> HubView: ...

    # events: replay from the store, then live
    def follow_events(
        self, since: int | None = None, *, ephemeral: bool = False
    ) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """Events with ids above ``since`` (replayed from the store), then live ones as they come,
        with no gap and no duplicate. ``since=None``: only events published from now on.
        ``ephemeral``: the live ones include ``model.delta`` and ``tool.output``."""
        ...
