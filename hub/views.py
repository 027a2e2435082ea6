"""The JSON shapes the hub's interfaces return: agents and their file changes, chats, threads,
approvals, artifacts, usage, tool servers, limits and the hub itself. A leaf: the HTTP API, the MCP face and the
service all read them; :mod:`dispatch.hub.service.contract` says what may be asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dispatch.hub.times import Instant

if TYPE_CHECKING:  # defined beside the threads (which import View from here)
    pass


Decision = Literal["approve", "deny"]


Remember = Literal["once", "session", "always"]


class View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlacementView(View):
    """Where an agent's tool servers run: the hub's process (``local``), or a Ray node."""

    engine: Literal["local", "ray"] = "local"
    node_id: str | None = Field(default=None, description="the Ray node of its tool host (ray, once placed)")
    address: str | None = Field(default=None, description="that node's IP address")
    files: Literal["shared", "copy"] | None = Field(
        default=None,
        description="ray, once placed: shared (it works in the project's files, the node sees them) or copy (in "
        "a copy of its own on the node, merged back when it ends)",
    )


class AgentView(View):
    """One agent in the tree."""

    id: str
    parent_id: str | None
    chat_id: str | None = Field(default=None, description="the chat whose dispatch agent this is (or descends from)")
    root: str | None = Field(default=None, description="the project root it works in")
    name: str
    template: str | None
    task: str
    state: str
    reason: str
    waiting_until: Instant | None = Field(default=None, description="ISO time a waiting_key agent expects a key back")
    model: str
    scope: list[str]
    detached: bool
    tokens_in: int = Field(description="prompt tokens, cached ones included")
    tokens_out: int
    cache_read_tokens: int = Field(default=0, description="of tokens_in: read from the provider's prompt cache")
    cache_write_tokens: int = Field(default=0, description="of tokens_in: written to the provider's prompt cache")
    cost_usd: float
    steps: int
    report: str | None
    error: str | None
    question: str | None = Field(default=None, description="what a waiting_user agent asked")
    compactions: int = Field(
        default=0, description="how many times it compacted what it sends its model (its transcript is kept whole)"
    )
    budget_usd: float | None = Field(default=None, description="its cap in US dollars, with its descendants")
    max_tokens: int | None = Field(default=None, description="its cap in tokens (in + out), with its descendants")
    max_steps: int | None = Field(default=None, description="its own cap on steps (the hub's limits.max_steps too)")
    placement: PlacementView = Field(
        default_factory=PlacementView, description="where its tool servers run (execution.engine), and on which node"
    )


class AgentDetail(AgentView):
    """An agent with its transcript (OpenAI-format messages) and progress notes."""

    transcript: list[dict[str, Any]]
    progress: list[str]
    compacted_at: list[int] = Field(
        default_factory=list[int],
        description="transcript indices where it compacted: from there on its model was sent a summary of what "
        "came before (the transcript itself is whole)",
    )


class ChangedFileView(View):
    """One file an agent changed."""

    path: str = Field(description="relative to the project root")
    status: Literal["added", "modified", "deleted"]
    additions: int = Field(description="lines added (0 for a binary file)")
    deletions: int = Field(description="lines removed (0 for a binary file)")


class AgentChanges(View):
    """What an agent (and, unless ``own``, its descendants) changed in the project's files, from
    each file's state before the first change to its state after the last."""

    agent_id: str
    files: list[ChangedFileView]
    diff: str = Field(description="a unified diff of every file listed")


class RewindView(View):
    """A rewind done (or undone): the files put back."""

    agent_id: str
    rewind_id: str = Field(description='undo it with POST /api/agents/{id}/rewind and {"undo": true}')
    files: list[str] = Field(description="the files restored (written back, or removed when the agent made them)")
    undone: bool = Field(default=False, description="true when this undid the agent's last rewind")


class ChatMessageView(View):
    id: str
    chat_id: str
    parent_id: str | None = Field(description="the message before it; forks share their history through it")
    role: Literal["user", "assistant", "system"]
    text: str
    agent_id: str | None = Field(description="the dispatch agent that answered, for assistant messages")
    created_at: Instant


class ChatView(View):
    id: str
    title: str
    created_at: Instant
    updated_at: Instant
    forked_from: str | None = Field(description="'CHAT_ID:MESSAGE_ID' this chat was forked at")
    agent_id: str | None = Field(description="its dispatch agent while one runs")
    root: str | None = Field(default=None, description="the project root its agents work in (null: the hub's)")
    budget_usd: float | None = Field(default=None, description="the cap of each of its dispatch agents, in US dollars")
    max_tokens: int | None = Field(default=None, description="the cap of each of its dispatch agents, in tokens")
    max_steps: int | None = Field(default=None, description="the cap of each of its dispatch agents, in steps")
    model: str | None = Field(
        default=None, description="the model (tag or litellm name) of its dispatch agents (null: the hub's default)"
    )


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
    diff: str | None = Field(
        default=None,
        description="a checkpoint about changing files: the unified diff of the change (before_write: the "
        "proposed write against the file as it is, bounded; a line starting with # where none can be shown)",
    )
    created_at: Instant
    auto_approve_at: Instant | None
    state: Literal["pending", "approved", "denied"]


class ArtifactView(View):
    id: str
    kind: str
    title: str
    agent_id: str | None
    created_at: Instant
    content: str | None = Field(default=None, description="left out of listings")


class UsageFigures(View):
    """Tokens and cost of some model calls; the cache tokens are part of ``tokens_in``."""

    tokens_in: int
    tokens_out: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    calls: int


class UsageView(View):
    total: UsageFigures
    by_agent: dict[str, UsageFigures]
    by_key: dict[str, UsageFigures]
    by_model: dict[str, UsageFigures]
    by_day: dict[str, UsageFigures]


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


class ThreadMessageView(View):
    """One entry of a thread: a question of the agent, or an answer of the user."""

    id: str
    agent_id: str
    role: Literal["agent", "user"]
    text: str
    message_id: str | None = Field(default=None, description="the inbox message that carried the user's answer")
    created_at: Instant


class ThreadView(View):
    """A detached agent's conversation with the user."""

    agent_id: str
    name: str
    parent_id: str | None
    task: str
    created_at: Instant
    state: str | None = Field(default=None, description="the agent's state in this hub run; None: not in it")
    question: str | None = Field(default=None, description="the question it waits on an answer to, if any")


class ThreadDetail(ThreadView):
    messages: list[ThreadMessageView]


class LimitsView(BaseModel):
    """The limits and their queues, as ``GET /api/limits`` shows them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    running_agents: int = Field(description="agents holding a running slot now")
    running_agents_limit: int
    queued_agents: int = Field(description="agents waiting for a running slot")
    model_calls: int = Field(description="model calls in flight now")
    model_calls_limit: int
    queued_model_calls: int = Field(description="model calls waiting for a slot")


class HubView(View):
    """The hub itself, as ``GET /api/hub`` shows it."""

    root: str = Field(description="the project root it was started in (new work goes there unless told)")
    projects: list[str] = Field(
        default_factory=list[str], description="every project root it serves or has served, its own first"
    )
    default_model: str | None = Field(description="the model (or tag) a new chat's dispatch agent gets; null: none")
    default_model_source: str = Field(description="why that one, or what to set when there is none")
    models: list[str] = Field(
        default_factory=list[str],
        description="what a task may be started with or an agent switched to: the configured tags, then the "
        "configured models as provider/model (the model pickers of the web UI list them)",
    )
    shell: str = Field(
        description="how shell commands run on this hub: the sandbox mode in force (config `sandbox`) and what it "
        "lacks, or why the shell is disabled and how to fix it"
    )
