"""The hub's face toward its interfaces: what the HTTP API, the web UI and the MCP server may ask.

:class:`HubService` is the contract; ``dispatch.hub.runtime.Hub`` implements it over the store,
the event bus and the tree. The views are the JSON shapes the API returns. Interfaces depend on
this module only, never on the tree's internals.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from dispatch.hub.events import Event
from dispatch.hub.limits import LimitsView
from dispatch.servers.hublink import MessageKind

if TYPE_CHECKING:  # defined beside the threads (which import View from here)
    from dispatch.hub.threads import ThreadDetail, ThreadMessageView, ThreadView

Decision = Literal["approve", "deny"]
Remember = Literal["once", "session", "always"]


class View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentView(View):
    """One agent in the tree."""

    id: str
    parent_id: str | None
    chat_id: str | None = Field(default=None, description="the chat whose dispatch agent this is (or descends from)")
    name: str
    template: str | None
    task: str
    state: str
    reason: str
    waiting_until: str | None = Field(default=None, description="ISO time a waiting_key agent expects a key back")
    model: str
    scope: list[str]
    detached: bool
    tokens_in: int
    tokens_out: int
    cost_usd: float
    steps: int
    report: str | None
    error: str | None
    question: str | None = Field(default=None, description="what a waiting_user agent asked")


class AgentDetail(AgentView):
    """An agent with its transcript (OpenAI-format messages) and progress notes."""

    transcript: list[dict[str, Any]]
    progress: list[str]


class ChatMessageView(View):
    id: str
    chat_id: str
    parent_id: str | None = Field(description="the message before it; forks share their history through it")
    role: Literal["user", "assistant", "system"]
    text: str
    agent_id: str | None = Field(description="the dispatch agent that answered, for assistant messages")
    created_at: str


class ChatView(View):
    id: str
    title: str
    created_at: str
    updated_at: str
    forked_from: str | None = Field(description="'CHAT_ID:MESSAGE_ID' this chat was forked at")
    agent_id: str | None = Field(description="its dispatch agent while one runs")


class ChatDetail(ChatView):
    messages: list[ChatMessageView]


class ApprovalView(View):
    id: str
    kind: Literal["path", "checkpoint", "tool_change"]
    agent_id: str
    chain: list[str] = Field(description="names from the top agent down to the asking agent")
    path: str | None
    operation: Literal["read", "write", "execute"] | None
    checkpoint: str | None
    server: str | None = Field(default=None, description="tool_change: the outside MCP server whose tools changed")
    content: str | None = Field(description="what the checkpoint shows, e.g. the plan; tool_change: the diff")
    created_at: str
    auto_approve_at: str | None
    state: Literal["pending", "approved", "denied"]


class ArtifactView(View):
    id: str
    kind: str
    title: str
    agent_id: str | None
    created_at: str
    content: str | None = Field(default=None, description="left out of listings")


class UsageView(View):
    total: dict[str, float]
    by_agent: dict[str, dict[str, float]]
    by_key: dict[str, dict[str, float]]
    by_model: dict[str, dict[str, float]]
    by_day: dict[str, dict[str, float]]


class ToolInfo(View):
    name: str
    description: str


class ToolServerView(View):
    """An outside MCP server of the config (``mcp_servers``) and what the hub knows of it."""

    name: str
    transport: Literal["stdio", "http"]
    state: Literal["pinned", "changed", "unpinned", "failed"] = Field(
        description="pinned: its tool list is the one the user trusts; changed: it differs and agents do not get "
        "it until the change is approved; unpinned: not started yet with this data directory; failed: it did not "
        "start at its last use in this run (the agent that used it was told why)"
    )
    tools: list[ToolInfo] = Field(
        description="the tools it offered when last started (the pinned list while it has not started in this run)"
    )
    approval_id: str | None = Field(description="the pending approval of a changed tool list, or null")


class HubService(Protocol):
    """Everything an interface may do. Unknown ids raise ``UnknownAgentError`` (or another
    ``UserError`` naming the id); bad input raises ``UserError`` saying what is wrong."""

    # agents
    async def agents(self) -> list[AgentView]: ...
    async def agent(self, agent_id: str) -> AgentDetail: ...
    async def send(self, agent_id: str, text: str, kind: MessageKind) -> str: ...
    async def switch_model(self, agent_id: str, model: str) -> None: ...
    async def cancel(self, agent_id: str) -> AgentView: ...
    async def resume(self, agent_id: str) -> AgentView: ...
    async def start(
        self, task: str, *, template: str | None = None, model: str | None = None, detached: bool = False
    ) -> AgentView: ...

    # chats
    async def create_chat(self, title: str | None = None) -> ChatView: ...
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

    # events: replay from the store, then live
    def follow_events(self, since: int | None = None) -> AbstractAsyncContextManager[AsyncIterator[Event]]:
        """Events with ids above ``since`` (replayed from the store), then live ones as they come,
        with no gap and no duplicate. ``since=None``: only events published from now on."""
        ...
