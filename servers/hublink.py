"""The small interface between the hub and the tool servers that talk back to it.

The ``inbox`` and ``summon`` servers are built for one agent and hold a :class:`HubLink` bound to
that agent: identity comes from construction, never from anything the model says. The hub
implements the protocol (``dispatch.hub.agents.tree``); tests may implement it with a double. The data
shapes here are the ones that cross that line.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class MessageKind(StrEnum):
    """What a message in an agent's inbox is."""

    instruction = "instruction"
    correction = "correction"
    context = "context"
    data = "data"
    report = "report"
    """A child's final report (or its failure), sent to its parent."""


USER_KINDS: tuple[MessageKind, ...] = (
    MessageKind.instruction,
    MessageKind.correction,
    MessageKind.context,
    MessageKind.data,
)


class InboxMessage(BaseModel):
    """One message waiting for an agent: from the user, its parent, or one of its children."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    kind: MessageKind
    text: str
    sender: str = Field(description="'user', 'parent', or the id of the child that reports")
    sent_at: datetime

    def render(self) -> str:
        """The message as the model sees it in its transcript, marked with its origin and kind."""
        if self.kind is MessageKind.report:
            head = f"[report from child {self.sender} · message {self.id}]"
        else:
            who = "the user" if self.sender == "user" else f"your {self.sender}"
            head = f"[{self.kind.value} from {who} · message {self.id}]"
        return f"{head}\n{self.text}"


class GrantRequest(BaseModel):
    """What a parent asks for its child. Unset fields inherit the parent's, except ``summon``,
    which defaults to off (a child is a leaf unless made an orchestrator on purpose)."""

    model_config = ConfigDict(extra="forbid")

    shell: bool | None = Field(default=None, description="may run shell commands")
    summon: bool | None = Field(default=None, description="may summon children of its own")
    lsp: bool | None = Field(default=None, description="may read language-server diagnostics")
    web: bool | list[str] | None = Field(
        default=None,
        description="may fetch from the web (off unless asked): true for all the hosts you may reach, or a list "
        "of hosts (each with its subdomains)",
    )
    web_private: bool | list[str] | None = Field(
        default=None,
        description="web may reach loopback and private-network addresses (off unless asked): true for all you "
        "may reach, or a list of addresses and networks",
    )
    read: list[str] | None = Field(default=None, description="root-relative paths it may read")
    max_depth: int | None = Field(default=None, ge=0, description="levels of descendants below it")
    mcp_servers: bool | dict[str, bool | list[str]] | None = Field(
        default=None,
        description="outside MCP servers of the config (off unless asked): {name: true} for a server with the "
        "tools you have of it, {name: [tool, ...]} for some of them; true for every one you have",
    )


class SummonRequest(BaseModel):
    """A parent's request for one child agent."""

    model_config = ConfigDict(extra="forbid")

    task: str
    name: str | None = None
    template: str | None = None
    instructions: str | None = None
    model: str | None = None
    skills: list[str] = Field(default_factory=list[str])
    grants: GrantRequest = Field(default_factory=GrantRequest)
    scope: list[str] = Field(default_factory=list[str], description="root-relative paths it may write")
    detached: bool = False
    budget_usd: float | None = Field(default=None, description="dollars for it and its children, out of yours")
    max_tokens: int | None = Field(default=None, description="tokens for it and its children, out of yours")
    max_steps: int | None = Field(default=None, description="steps (model calls) it may take")
    isolation: Literal["worktree"] | None = Field(
        default=None, description="worktree: it works in a git worktree of its own, merged back when it reports"
    )


class FileChangeInfo(BaseModel):
    """One file an agent changed."""

    model_config = ConfigDict(extra="forbid")

    path: str
    status: str = Field(description="added, modified or deleted")
    additions: int
    deletions: int


class ChangeSummary(BaseModel):
    """What an agent and its descendants changed in the project's files, counted."""

    model_config = ConfigDict(extra="forbid")

    files: int
    added: int
    modified: int
    deleted: int
    additions: int = Field(description="lines added")
    deletions: int = Field(description="lines removed")


class ChildChanges(BaseModel):
    """A child's changes (its descendants' too): each file, and the unified diff."""

    model_config = ConfigDict(extra="forbid")

    id: str
    files: list[FileChangeInfo]
    diff: str


class ConflictInfo(BaseModel):
    """A file the parent's tree and an isolated child both changed, differently: both versions."""

    model_config = ConfigDict(extra="forbid")

    path: str
    yours: str | None = Field(description="the file in your tree now (None: deleted), cut when long")
    child: str | None = Field(description="the child's version (None: deleted), cut when long")


class MergeInfo(BaseModel):
    """How an isolated child's worktree came back into its parent's tree."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["merged", "conflict", "discarded"]
    files: list[str] = Field(default_factory=list[str], description="merged: the files written into your tree")
    conflicts: list[ConflictInfo] = Field(
        default_factory=list[ConflictInfo],
        description="conflict: nothing was written; resolve it yourself, summon it again, or leave it",
    )
    reason: str | None = None


class ChildInfo(BaseModel):
    """A child as its parent sees it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    state: str
    task: str
    scope: list[str]
    report: str | None = None
    changes: ChangeSummary | None = Field(
        default=None, description="what it and its descendants changed in files (child_changes gives the diff)"
    )
    merge: MergeInfo | None = Field(default=None, description="isolation worktree: how its work came back")


class WaitOutcome(BaseModel):
    """What a blocking wait on children came back with."""

    model_config = ConfigDict(extra="forbid")

    finished: list[ChildInfo]
    pending: list[ChildInfo]
    timed_out: bool = False
    interrupted: bool = Field(default=False, description="a message arrived for the waiting agent")


class SkillInfo(BaseModel):
    """A skill as an agent sees it when it lists or loads its skills."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the full reference: global:NAME, project:NAME or builtin:NAME")
    summary: str = Field(description="its first line")
    loaded: bool = Field(description="already in the agent's instructions or transcript")
    text: str | None = Field(default=None, description="the skill itself, when it was loaded just now")


class TemplateInfo(BaseModel):
    """A template an agent may summon children with."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    tools: str = Field(description="its servers, and the tools of those it narrows: 'fs[read_file,grep] shell'")
    detached: bool = False
    caps: str = Field(default="", description="the caps it gives each of its agents: '$2, 50 steps'; '': none")


Operation = Literal["read", "write", "execute"]


class AccessDecision(BaseModel):
    """The answer to a request for a path outside the agent's grants."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    granted: bool
    remember: Literal["once", "session", "always"] | None = None
    reason: str = Field(default="", description="why, in words (who denied, or which rule allowed)")


class ArtifactInfo(BaseModel):
    """A plan, research finding or other document an agent saved for later agents."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: str = Field(description="plan, research, notes, ... (free words)")
    title: str
    agent_id: str | None = Field(description="the agent that saved it")
    created_at: str
    excerpt: str = Field(default="", description="where a search matched, or its beginning")
    content: str | None = Field(default=None, description="the whole text, when asked for one artifact")


class LinkRefusal(Exception):
    """The hub refused a request (a grant escalation, an overlapping scope, an unknown child)."""


class HubLink(Protocol):
    """What one agent's tool servers may ask of the hub. Bound to that agent."""

    @property
    def agent_id(self) -> str: ...

    async def take_messages(self) -> list[InboxMessage]:
        """Remove and return every message waiting in the agent's inbox (those the hub lets through)."""
        ...

    async def report_progress(self, text: str) -> None:
        """Record a progress note for the user and the agent's parent."""
        ...

    async def ask_user(self, question: str) -> list[InboxMessage]:
        """Put a question to the user and return what arrives next in the agent's inbox."""
        ...

    async def request_access(self, path: str, operation: Operation, why: str) -> AccessDecision:
        """Ask the user (through the hub's approvals) for ``operation`` on the absolute ``path``.
        Blocks until answered; the hub records what the answer grants."""
        ...

    async def summon(self, request: SummonRequest) -> str:
        """Start a child; returns its id. Raises :class:`LinkRefusal` naming the conflict."""
        ...

    async def wait_children(self, ids: list[str], timeout_s: float | None) -> WaitOutcome:
        """Wait until the children finish, the timeout passes, or a message arrives."""
        ...

    async def message_child(self, child_id: str, text: str, kind: MessageKind) -> str:
        """Send a message to one of the agent's own children; returns the message id."""
        ...

    async def compact_child(self, child_id: str) -> ChildInfo:
        """Have a running child compact what it sends its model before its next call."""
        ...

    async def cancel_child(self, child_id: str) -> ChildInfo:
        """Cancel one of the agent's own children (and its descendants)."""
        ...

    async def children(self) -> list[ChildInfo]:
        """The agent's children with their states and what they changed in files."""
        ...

    async def child_changes(self, child_id: str) -> ChildChanges:
        """What one of the agent's own children (and its descendants) changed in files, with the diff."""
        ...

    def skills(self) -> list[SkillInfo]:
        """The skills the agent may load on demand, and whether each is loaded already."""
        ...

    def templates(self) -> list[TemplateInfo]:
        """The templates the agent may summon children with."""
        ...

    def load_skill(self, name: str) -> SkillInfo:
        """Load one skill into the agent's context; raises :class:`LinkRefusal` for an unknown or
        ambiguous name. ``text`` is None when it was loaded already."""
        ...

    async def save_artifact(self, kind: str, title: str, content: str) -> ArtifactInfo:
        """Keep a document for later agents (searchable); returns it with its id, once stored."""
        ...

    async def find_artifacts(self, query: str | None, kind: str | None, limit: int) -> list[ArtifactInfo]:
        """Saved artifacts matching the words of ``query`` (best first) and ``kind``; newest first
        without a query. Raises :class:`LinkRefusal` when the hub keeps none."""
        ...

    async def read_artifact(self, artifact_id: str) -> ArtifactInfo:
        """One artifact with its content; raises :class:`LinkRefusal` for an unknown id."""
        ...
