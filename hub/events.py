"""The event bus: every change in the tree of agents, in order, for whoever listens.

Agents and the tree publish; the CLI's live view, the store, the API's WebSocket and the MCP face
subscribe. Publishing never blocks the publisher: each subscriber has its own unbounded queue.

An :class:`Event` is the bus's envelope (``seq``, ``at``, ``agent_id``) around what happened, its
``data``: one frozen model per kind, told apart by its ``type`` (:data:`EventData`). Producers build
the model, consumers match on its class. On the wire (``/api/events``) and in the store an event
is ``{"seq", "at", "type", "agent_id", "data": {...}}``: ``event.model_dump_json()`` gives exactly
that, as does ``event.wire`` with ``data`` encoded once (``event.data_json``) for the store and
every client, and :func:`stored_event` reads it back. A field marked *journal only* is what only the store
needs (a step's transcript messages, the spec, running totals): it is left out of the wire and of
the stored event, so an event read back has its default there.

Two kinds are *ephemeral* (:data:`EPHEMERAL`): ``model.delta`` (an answer's text as it streams)
and ``tool.output`` (a running tool's output). They reach only the subscribers that ask for them
(``subscribe(ephemeral=True)``), at once and never journaled, and they take no number of their
own: their ``seq`` is the last one handed out before them, so a client that reconnects with the
highest ``seq`` it saw misses nothing stored. What they stream is stored once complete, by the
``agent.step`` and ``tool.result`` that follow.

An event the store holds but this version does not know (another version's kind, or fields that
no longer fit) is read back as :class:`OtherEvent`, its type and fields as stored: a replay goes
on, and the wire shows it unchanged.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from functools import cached_property
from typing import Annotated, Any, Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, computed_field


def _none(value: object) -> bool:
    return value is None


def _kind(name: str) -> Any:
    """The ``type`` field of a kind: the wire puts it beside ``data``, not in it."""
    return Field(default=name, exclude=True)


class Spent(BaseModel):
    """An agent's usage so far (journal only: the agent's row keeps it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens_in: int
    tokens_out: int
    cost_usd: float
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Started(_Data):
    parent_id: str | None
    name: str
    template: str | None
    model: str
    task: str
    scope: list[str]
    detached: bool
    skills: list[str]
    chat_id: str | None = None
    """The chat the agent's top agent answers (None: none, or not known to the tree)."""
    root: str | None = Field(default=None, exclude_if=_none)
    """The project root it works in."""


class AgentSpawned(_Started):
    """A new agent starts (``pending`` until it has a running slot)."""

    type: Literal["agent.spawned"] = _kind("agent.spawned")
    spec_json: str = Field(default="", exclude=True)
    """Journal only: the whole spec, as JSON."""


class AgentResumed(_Started):
    """An interrupted agent continues from its last persisted step."""

    type: Literal["agent.resumed"] = _kind("agent.resumed")


class AgentStateChanged(_Data):
    type: Literal["agent.state"] = _kind("agent.state")
    state: str
    reason: str = ""
    until: str | None = Field(default=None, exclude_if=_none)
    """While ``waiting_key``: the earliest known reset of a key it may use (ISO time)."""
    steps: int | None = Field(default=None, exclude_if=_none)
    """Set when a dead hub's agent is marked interrupted: the steps it had persisted."""
    error: str | None = Field(default=None, exclude=True)
    """Journal only: what failed (the agent's error)."""
    spent: Spent | None = Field(default=None, exclude=True)
    """Journal only: the agent's usage so far (None: unchanged)."""


class AgentStepped(_Data):
    """One model call of the agent and what followed it."""

    type: Literal["agent.step"] = _kind("agent.step")
    index: int
    text: str | None
    tool_calls: list[str]
    tokens_in: int
    tokens_out: int
    cost_usd: float
    first: int = Field(default=0, exclude=True)
    """Journal only: the transcript index of the first of ``messages``."""
    messages: list[dict[str, Any]] = Field(default_factory=list[dict[str, Any]], exclude=True)
    """Journal only: the transcript messages added since the previous step."""
    spent: Spent | None = Field(default=None, exclude=True)
    """Journal only: the agent's usage so far, this step included."""
    model: str | None = Field(default=None, exclude=True)
    """Live only (the traces'; neither on the wire nor stored): the model that answered, a tag resolved."""
    asked_at: float | None = Field(default=None, exclude=True)
    """Live only: when the model call began (epoch seconds)."""
    answered_at: float | None = Field(default=None, exclude=True)
    """Live only: when its answer came, before the step's tool calls ran."""
    cache_read_tokens: int = Field(default=0, exclude=True)
    """Live only: the part of ``tokens_in`` read from the provider's prompt cache."""
    cache_write_tokens: int = Field(default=0, exclude=True)
    """Live only: the part of ``tokens_in`` written to it."""


class AgentCompacted(_Data):
    """The agent compacted what it sends its model (its transcript is kept whole): before the
    model call about to pass ``models.compact_at`` of its window, after the provider refused one
    as too long, or when asked to."""

    type: Literal["agent.compacted"] = _kind("agent.compacted")
    tokens_before: int
    tokens_after: int
    model: str | None
    """The model that wrote the summary (None: old tool results were only cut short)."""
    compactions: int
    """How many times the agent has compacted, this one included."""
    upto: int
    """The transcript index before which messages were summarised or cut short."""
    summary: str | None = None
    """The message that stands in for the summarised part (None: nothing newly summarised)."""
    compaction_json: str = Field(default="", exclude=True)
    """Journal only: the compaction record, what a resumed agent sends from."""
    spent: Spent | None = Field(default=None, exclude=True)
    """Journal only: the agent's usage so far, the summary's included."""


class AgentReported(_Data):
    type: Literal["agent.report"] = _kind("agent.report")
    report: str | None


class AgentModelSwitched(_Data):
    type: Literal["agent.model"] = _kind("agent.model")
    model: str


class AgentProgress(_Data):
    type: Literal["agent.progress"] = _kind("agent.progress")
    text: str


class AgentQuestion(_Data):
    type: Literal["agent.question"] = _kind("agent.question")
    question: str


class SkillLoaded(_Data):
    type: Literal["agent.skill"] = _kind("agent.skill")
    skill: str


class MessageSent(_Data):
    type: Literal["message.sent"] = _kind("message.sent")
    message_id: str
    kind: str
    sender: str
    text: str


class MessageDelivered(_Data):
    type: Literal["message.delivered"] = _kind("message.delivered")
    message_id: str
    step: int


class ToolCalled(_Data):
    type: Literal["tool.call"] = _kind("tool.call")
    call_id: str
    name: str
    arguments: str


class ToolReturned(_Data):
    type: Literal["tool.result"] = _kind("tool.result")
    call_id: str
    name: str
    is_error: bool
    text: str
    """The first 2000 characters of the result."""
    seconds: float
    blocked: str | None = Field(default=None, exclude_if=_none)
    """Set when a PreToolUse hook of the config blocked the call (it did not run): the hook's reason."""


class ModelDelta(_Data):
    """Ephemeral: part of the answer of the agent's model call ``step`` as it streams in, what
    arrived since the previous delta of that step (append it): answer text, or (``tool`` set) the
    arguments of that tool's call. The step's ``agent.step`` follows when the call completes."""

    type: Literal["model.delta"] = _kind("model.delta")
    step: int
    text: str
    tool: str | None


class ToolOutput(_Data):
    """Ephemeral: output of a running tool call (a shell command's stdout and stderr) since the
    previous chunk; its ``tool.result`` follows with the final result."""

    type: Literal["tool.output"] = _kind("tool.output")
    call_id: str
    name: str
    text: str


class ToolHostStarted(_Data):
    """The agent's tool host (its fs, shell and lsp servers; ``execution.engine: ray``) started on a node."""

    type: Literal["toolhost.started"] = _kind("toolhost.started")
    engine: str
    node_id: str | None
    address: str | None
    files: str | None = None
    """shared (it works in the project's files) or copy (in a copy of them on its node)."""


class ToolHostLost(_Data):
    """The agent's tool host was lost (its node stopped): its running tool call failed, it is interrupted."""

    type: Literal["toolhost.lost"] = _kind("toolhost.lost")
    node_id: str | None
    address: str | None
    reason: str


class ChangedFile(BaseModel):
    """One file an agent's tool call changed: its state before and after, as ``MODE SHA`` in the
    project's change store (None: absent)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    before: str | None
    after: str | None


class FilesChanged(_Data):
    """Files the agent changed through its writing tools (``fs`` writes, ``shell`` commands): the
    snapshots of its write scope before and after (tree ids in the change store) and each file."""

    type: Literal["files.changed"] = _kind("files.changed")
    before: str
    after: str
    files: list[ChangedFile]


class ArtifactSaved(_Data):
    type: Literal["artifact.saved"] = _kind("artifact.saved")
    artifact_id: str
    kind: str
    title: str


class ApprovalRequested(_Data):
    type: Literal["approval.requested"] = _kind("approval.requested")
    approval_id: str
    kind: str
    chain: list[str]
    path: str | None
    operation: str | None
    checkpoint: str | None
    server: str | None = None
    content: str | None
    diff: str | None = None
    """A checkpoint about changing files: the unified diff of the change (as the view's ``diff``)."""
    created_at: str
    auto_approve_at: str | None


class ApprovalResolved(_Data):
    type: Literal["approval.resolved"] = _kind("approval.resolved")
    approval_id: str
    state: str
    decided_by: str
    remember: str


class ConfigReloaded(_Data):
    """The hub's config, templates and skills changed on disk and were loaded again (its agent id is
    :data:`HUB`): agents started from now on use them."""

    type: Literal["config.reloaded"] = _kind("config.reloaded")
    restart_needed: list[str]
    """Changed sections the hub reads only at start (``limits``, ``lsp``...): in force after a restart."""


class ConfigRefused(_Data):
    """An edit of the config, a template or a skill does not load (its agent id is :data:`HUB`):
    the last good version stays in force."""

    type: Literal["config.refused"] = _kind("config.refused")
    error: str
    """What is wrong, naming the file and the field."""


class DataDirFull(_Data):
    """The hub's data directory is full (its agent id is :data:`HUB`): nothing is saved, agents wait
    (``waiting_disk``) and the API's writes answer 507 until a write succeeds again."""

    type: Literal["store.full"] = _kind("store.full")
    error: str
    """What is wrong, naming the data directory."""


class DataDirWritable(_Data):
    """A write to the data directory succeeded again after :class:`DataDirFull` (agent id :data:`HUB`):
    what waited is saved and the agents go on."""

    type: Literal["store.writable"] = _kind("store.writable")


class OtherEvent(_Data):
    """An event of a kind this version does not know, or whose fields no longer fit its kind: read
    back from the store as it was written (its fields are the model's extras)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: str = Field(exclude=True)

    @property
    def fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


KnownEvent = Annotated[
    AgentSpawned
    | AgentResumed
    | AgentStateChanged
    | AgentStepped
    | AgentCompacted
    | AgentReported
    | AgentModelSwitched
    | AgentProgress
    | AgentQuestion
    | SkillLoaded
    | MessageSent
    | MessageDelivered
    | ToolCalled
    | ToolReturned
    | ModelDelta
    | ToolOutput
    | ToolHostStarted
    | ToolHostLost
    | FilesChanged
    | ArtifactSaved
    | ApprovalRequested
    | ApprovalResolved
    | ConfigReloaded
    | ConfigRefused
    | DataDirFull
    | DataDirWritable,
    Field(discriminator="type"),
]
"""Every kind of event the hub publishes, told apart by ``type``."""

EventData = KnownEvent | OtherEvent
EPHEMERAL = (ModelDelta, ToolOutput)
"""The kinds only streamed, never journaled (see the module's docstring)."""
_KNOWN: TypeAdapter[KnownEvent] = TypeAdapter(KnownEvent)


HUB = "hub"
"""The agent id of events about the hub itself rather than one agent (its config, its data directory)."""


class Event(BaseModel):
    """One thing that happened to one agent, numbered by the bus."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    at: float
    agent_id: str
    data: EventData

    @computed_field
    @property
    def type(self) -> str:
        return self.data.type

    @property
    def ephemeral(self) -> bool:
        """A kind only streamed, never stored (:data:`EPHEMERAL`)."""
        return isinstance(self.data, EPHEMERAL)

    @cached_property
    def data_json(self) -> str:
        """``data`` as JSON, as stored and sent: encoded once, however many read it."""
        return self.data.model_dump_json()

    @cached_property
    def wire(self) -> str:
        """The event as JSON, as clients receive it (the same as ``model_dump_json()``), around
        :attr:`data_json`."""
        at, agent_id = json.dumps(self.at), json.dumps(self.agent_id, ensure_ascii=False)
        kind = json.dumps(self.type, ensure_ascii=False)
        return f'{{"seq":{self.seq},"at":{at},"agent_id":{agent_id},"data":{self.data_json},"type":{kind}}}'


def stored_event(seq: int, at: float, type: str, agent_id: str, data: dict[str, Any]) -> Event:
    """An event as the store keeps it (``data`` without the type), read back into its model; an
    :class:`OtherEvent` when the type is unknown or the fields do not fit it."""
    try:
        parsed: EventData = _KNOWN.validate_python({**data, "type": type})
    except ValidationError:
        parsed = OtherEvent.model_validate({**data, "type": type})
    return Event(seq=seq, at=at, agent_id=agent_id, data=parsed)


def _event(seq: int, agent_id: str, data: EventData) -> Event:
    """An event of ``data`` (a model, validated when made) happening now; not validated again
    (the union of every kind would be tried against it, once per event)."""
    return Event.model_construct(seq=seq, at=time.time(), agent_id=agent_id, data=data)


class EventBus:
    """Fan-out of events to subscribers, with a sequence number per bus."""

    def __init__(self, last_seq: int = 0) -> None:
        self._seq = last_seq
        """The last number given; the next event gets the one after (a hub continues its store's)."""
        self._delivered = last_seq
        """The number of the last event handed to subscribers: an ephemeral event's ``seq``."""
        self._subscribers: list[MemoryObjectSendStream[Event]] = []
        self._watchers: list[MemoryObjectSendStream[Event]] = []
        """The subscribers that asked for ephemeral events too."""
        self._kinds: dict[MemoryObjectSendStream[Event], tuple[type[_Data], ...]] = {}
        """The subscribers that asked for some kinds only, and those kinds."""

    @property
    def watched(self) -> bool:
        """Whether a subscriber takes ephemeral events (else a producer need not make them)."""
        return bool(self._watchers)

    def _number(self, agent_id: str, data: EventData) -> Event:
        self._seq += 1
        return _event(self._seq, agent_id, data)

    def publish(self, agent_id: str, data: EventData) -> Event:
        """Number ``data`` as what happened to ``agent_id`` now, and hand it to every subscriber
        (an ephemeral kind: to those that take them, unnumbered: :meth:`flash`)."""
        if isinstance(data, EPHEMERAL):
            return self.flash(agent_id, data)
        event = self._number(agent_id, data)
        self.deliver(event)
        return event

    def flash(self, agent_id: str, data: EventData) -> Event:
        """Hand ``data`` at once to the subscribers that take ephemeral events, with the ``seq`` of
        the last event delivered; never journaled."""
        event = _event(self._delivered, agent_id, data)
        self._send(self._watchers, event)
        return event

    def deliver(self, event: Event) -> None:
        """Hand ``event`` to every subscriber (a journaled bus does so once the event is committed)."""
        self._delivered = max(self._delivered, event.seq)
        self._send(self._subscribers, event)

    def _send(self, streams: list[MemoryObjectSendStream[Event]], event: Event) -> None:
        for stream in list(streams):
            kinds = self._kinds.get(stream)
            if kinds is not None and not isinstance(event.data, kinds):
                continue
            try:
                stream.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._drop(stream)

    def _drop(self, stream: MemoryObjectSendStream[Event]) -> None:
        self._kinds.pop(stream, None)
        for streams in (self._subscribers, self._watchers):
            if stream in streams:
                streams.remove(stream)

    @asynccontextmanager
    async def subscribe(
        self, *, ephemeral: bool = False, kinds: tuple[type[_Data], ...] | None = None
    ) -> AsyncGenerator[MemoryObjectReceiveStream[Event]]:
        """A stream of every event published while the context is open (``ephemeral``: the
        ephemeral kinds too, as they happen, between the others; ``kinds``: those kinds only, so
        a follower of a few kinds is not woken for every step of every agent)."""
        send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=math.inf)
        self._subscribers.append(send)
        if kinds is not None:
            self._kinds[send] = kinds
        if ephemeral:
            self._watchers.append(send)
        try:
            yield receive
        finally:
            self._drop(send)
            send.close()
            receive.close()


async def each_queued(stream: MemoryObjectReceiveStream[Event]) -> AsyncGenerator[Event]:
    """Every event of ``stream``, in order, until it ends. Events already queued are handed on at
    once; only an empty queue waits. (``async for`` over the stream itself takes a turn of the event
    loop per event, and with hundreds of agents ready to run each turn is long: a burst of events
    reaches a WebSocket client late; bench/README.md has the figures.)"""
    try:
        while True:
            try:
                yield stream.receive_nowait()
            except anyio.WouldBlock:
                yield await stream.receive()
    except anyio.EndOfStream:
        return
