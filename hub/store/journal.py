"""The journal: every event is written to the store, with the agent state it describes, before
anyone hears of it.

:class:`JournaledBus` is the hub's :class:`~dispatch.hub.events.EventBus`. ``publish`` stays
synchronous and never blocks the publisher: it numbers the event (continuing the store's ids), asks
the :class:`Recorder` for the writes that make the store match (from what the event says: a step
carries its new transcript messages) and queues them. The :class:`Journal`'s writer task commits
what is queued in one transaction per batch (so many events share one commit and a step never
waits on the store), then hands that batch's events to the subscribers, in order. So a subscriber
sees only committed events, and :meth:`Journal.flush` is how a caller waits for its write to be
acknowledged: it commits what is queued itself when no batch is being written (the writer's next
turn of the event loop may be long in coming under load), and otherwise waits for the batch in
flight and the next. The writer's batches survive a crash of the hub as soon as they are
committed; what a flush acknowledges is on the disk too (a commit that waits for it, or a sync of
the log), so it survives a power loss.

While the disk is full a batch cannot be written: its writes stay queued, in order, and the writer
tries them again with a growing delay (:data:`~dispatch.hub.store.db.FULL_RETRY_S`) until one
succeeds; their events are announced meanwhile (the store gets them, in order, once there is
space), and a flush raises :class:`~dispatch.hub.errors.StoreFull` instead of acknowledging.

What the recorder writes per event, from what the event says (never from the live tree):

    agent.spawned      the agent's row (spec as JSON, chat, root)
    agent.state        state, reason, the question it waits on; usage and error when the tree says
    agent.step         the transcript messages added since the last step, usage, the step count
    agent.compacted    the compaction record and count, usage (the transcript is untouched)
    agent.report       the report                     agent.model   the model
    agent.progress     the note, appended             agent.question   (kept for agent.state)
    message.sent       the message (text included)    message.delivered   the step that read it
    files.changed      a row per file (``file_changes``)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from dispatch.hub import times
from dispatch.hub.errors import RunError, StoreFull
from dispatch.hub.events import (
    EPHEMERAL,
    AgentCompacted,
    AgentModelSwitched,
    AgentProgress,
    AgentQuestion,
    AgentReported,
    AgentResumed,
    AgentSpawned,
    AgentStateChanged,
    AgentStepped,
    Event,
    EventBus,
    EventData,
    FilesChanged,
    MessageDelivered,
    MessageSent,
    Spent,
    ToolCalled,
    ToolHostStarted,
    ToolReturned,
)
from dispatch.hub.llm.ledger import UsageRow
from dispatch.hub.store.db import FULL_RETRY_S, Store, insert_usage
from dispatch.hub.store.records import (
    Op,
    Records,
    append_progress,
    append_transcript,
    insert_agent,
    insert_events,
    insert_file_changes,
    insert_message,
    mark_delivered,
    update_agent,
)

log = logging.getLogger(__name__)


class Recorder:
    """Turns an event into the store writes that match it, from what the event says (and what the
    events before it said: the chat each agent answers, its question, the names of its chain)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.chat_of: dict[str, str | None] = {}
        """The chat each agent answers (its top agent's), from their ``agent.spawned`` events."""
        self.questions: dict[str, str] = {}
        self._names: dict[str, tuple[str, str | None]] = {}
        """Each agent's name and parent, as announced."""
        self._tool_arguments: dict[str, str] = {}

    def ops(self, event: Event) -> list[Op]:
        return [insert_events([event]), *self._writes(event.agent_id, event.at, event.data)]

    def _writes(self, agent_id: str, at: float, data: EventData) -> list[Op]:
        match data:
            case AgentSpawned() as spawned:
                return [self._spawned(agent_id, at, spawned)]
            case AgentStateChanged() as changed:
                return [self._state(agent_id, at, changed)]
            case AgentStepped() as step:
                added = [json.dumps(m, default=str) for m in step.messages]
                values = _spent(step.spent) | {"steps": step.index, "updated_at": at}
                return [append_transcript(agent_id, step.first, step.index, added), update_agent(agent_id, values)]
            case AgentCompacted() as compacted:
                values = _spent(compacted.spent) | {"compactions": compacted.compactions, "updated_at": at}
                return [update_agent(agent_id, values | {"compaction": compacted.compaction_json})]
            case AgentReported(report=report):
                return [update_agent(agent_id, {"report": report, "updated_at": at})]
            case AgentModelSwitched(model=model):  # the row's model overrides its spec's when read
                return [update_agent(agent_id, {"model": model, "updated_at": at})]
            case AgentProgress(text=text):
                return [append_progress(agent_id, text, at)]
            case MessageSent() as sent:
                message = {"id": sent.message_id, "kind": sent.kind, "sender": sent.sender, "text": sent.text}
                return [insert_message(agent_id, message | {"sent_at": at})]
            case MessageDelivered(message_id=message_id, step=step):
                return [mark_delivered(message_id, step)]
            case FilesChanged() as changed:
                return [insert_file_changes(agent_id, at, changed)]
            case ToolHostStarted() as started:  # where it ran, kept for its view after a restart
                placement = started.model_dump(include={"engine", "node_id", "address", "files"})
                return [update_agent(agent_id, {"placement": json.dumps(placement)})]
            case _:
                self._note(agent_id, data)
                return []

    def _note(self, agent_id: str, data: EventData) -> None:
        """Keep what later events need: names, chats, questions, a tool call's arguments."""
        match data:
            case AgentResumed(name=name, parent_id=parent, chat_id=chat):
                self._names[agent_id] = (name, parent)
                self.chat_of[agent_id] = chat or self.chat_of.get(agent_id)
            case AgentQuestion(question=question):
                self.questions[agent_id] = question
            case ToolCalled(call_id=call_id, arguments=arguments):
                self._tool_arguments[call_id] = arguments
            case ToolReturned() as returned:
                self._tool_result(agent_id, returned)
            case _:
                pass

    def chat(self, agent_id: str) -> str | None:
        """The chat the agent (or its top agent) answers, if any."""
        return self.chat_of.get(agent_id)

    def _spawned(self, agent_id: str, at: float, spawned: AgentSpawned) -> Op:
        parent = spawned.parent_id
        self._names[agent_id] = (spawned.name, parent)
        chat = self.chat_of[agent_id] = spawned.chat_id or (self.chat_of.get(parent) if parent else None)
        row: dict[str, Any] = {"id": agent_id, "parent_id": parent, "chat_id": chat, "root": spawned.root or self.root}
        row |= {"name": spawned.name, "template": spawned.template, "task": spawned.task, "model": spawned.model}
        row |= {"spec": spawned.spec_json, "state": "pending", "reason": "", "progress": "[]"}
        return insert_agent(row | {"created_at": at, "updated_at": at})

    def _state(self, agent_id: str, at: float, changed: AgentStateChanged) -> Op:
        values: dict[str, Any] = {"state": changed.state, "reason": changed.reason, "updated_at": at}
        values["waiting_until"] = times.seconds(changed.until) if changed.until else None
        values["question"] = self.questions.get(agent_id) if changed.state == "waiting_user" else None
        if changed.spent is not None:  # announced by the live agent (not by the store's bookkeeping)
            values |= _spent(changed.spent) | {"error": changed.error}
        return update_agent(agent_id, values)

    def _tool_result(self, agent_id: str, returned: ToolReturned) -> None:
        arguments = self._tool_arguments.pop(returned.call_id, "")
        if returned.is_error:
            log.warning(
                "tool %s failed for agent %s (%s): %s; arguments: %s",
                returned.name,
                agent_id,
                " > ".join(self.chain(agent_id)),
                returned.text.splitlines()[:1],
                arguments[:500],
            )

    def chain(self, agent_id: str) -> list[str]:
        """Names from the top agent down to this one (as far as the events seen tell)."""
        names: list[str] = []
        current: str | None = agent_id
        while current is not None and current in self._names and len(names) < 100:
            name, parent = self._names[current]
            names.insert(0, f"{name}[{current}]")
            current = parent
        return names or [agent_id]


def _spent(spent: Spent | None) -> dict[str, Any]:
    if spent is None:
        return {}
    return spent.model_dump()


class Journal:
    """Queued writes and their events; one writer task commits them in batches, then delivers."""

    def __init__(self, records: Records, deliver: Callable[[Event], None]) -> None:
        self._records = records
        self._deliver = deliver
        self._ops: list[Op] = []
        self._events: list[Event] = []
        self._queued = 0
        self._committed = 0
        self._synced = 0
        """Everything queued up to this count is on the disk (not only committed)."""
        self._durable_wanted = 0
        """A flush waits for everything up to this count to be on the disk."""
        self._failed_through = -1
        self._wake = anyio.Event()
        self._progress = anyio.Event()
        self._turn = anyio.Lock(fast_acquire=True)
        """Held while a batch is written: by the writer task, or by a caller of :meth:`flush`."""
        self._closing = False
        self._stopped = anyio.Event()
        self._full: StoreFull | None = None
        """Set while the queued writes could not be written for lack of space (they are kept)."""
        self.batches = 0

    def add(self, ops: Sequence[Op], event: Event | None = None) -> None:
        if self._stopped.is_set():
            log.warning("not saved, the journal is closed: %s", event.type if event else f"{len(ops)} writes")
        self._ops.extend(ops)
        if event is not None:
            self._events.append(event)
        self._queued += 1
        self._wake.set()

    async def flush(self) -> None:
        """Return once everything queued before the call is committed; RunError if it failed."""
        target = self._queued
        self._durable_wanted = max(self._durable_wanted, target)
        while self._committed < target:
            if self._stopped.is_set():
                raise self._unsaved()
            if self._turn.locked():
                await self._progress.wait()
            elif not await self._commit_queued():
                assert self._full is not None
                raise self._full
        if self._failed_through >= target:
            raise RunError("the hub could not save to its store (see hub.log in the data directory)")
        if self._synced < target:  # the writer committed it without waiting for the disk
            synced = self._committed
            await self._records.sync_log()
            self._synced = max(self._synced, synced)

    def _unsaved(self) -> Exception:
        """Why a write queued now will not be saved: the disk is full, or the journal closed."""
        return self._full or RunError("the hub's store is closed; the write was not saved")

    async def committed(self) -> None:
        """Return once everything queued before the call is committed, by the writer task (not
        necessarily on the disk: see :meth:`flush`). While the disk is full, wait for space."""
        target = self._queued
        while self._committed < target:
            if self._stopped.is_set():
                raise self._unsaved()
            await self._progress.wait()

    async def run(self) -> None:
        """The writer task: commit and deliver until :meth:`close`, then drain what is left (while
        the disk is full: trying again after a growing delay; at close, once more)."""
        first, longest = FULL_RETRY_S
        delay = first
        try:
            while True:
                if self._full is None:
                    delay = first
                    await self._wake.wait()
                else:
                    with anyio.move_on_after(delay):
                        await self._wake.wait()
                    delay = min(delay * 2, longest)
                self._wake = anyio.Event()
                await self._commit_queued()
                if self._closing:
                    if self._full is not None:
                        log.error("the hub stopped with %d writes unsaved: %s", len(self._ops), self._full)
                    return
        finally:
            self._stopped.set()
            self._progress.set()

    async def _commit_queued(self) -> bool:
        """Commit what is queued; False when the disk is full (what is queued stays queued)."""
        async with self._turn:
            while self._ops or self._events:
                if not await self._commit_batch():
                    return False
            return True

    async def _commit_batch(self) -> bool:
        ops, events, target = self._ops, self._events, self._queued
        self._ops, self._events = [], []
        durable = self._durable_wanted > self._synced
        started = time.perf_counter()
        try:
            with anyio.CancelScope(shield=True):  # a batch is written whole, even while the hub stops
                await self._records.apply(ops, durable=durable)
            if durable:
                self._synced = target
        except StoreFull as full:  # kept, in order, for the next try; announced now
            self._ops[:0] = ops
            self._full = full
            self._announce(events)
            self._progress.set()  # a flush waiting on this batch hears that it failed
            self._progress = anyio.Event()
            return False
        except Exception:
            log.exception("could not write %d events to the store", len(events))
            self._failed_through = target
        self._full = None
        self.batches += 1
        if time.perf_counter() - started > 1.0:
            log.warning("a store write of %d events took %.1f s", len(events), time.perf_counter() - started)
        self._announce(events)
        self._committed = target
        self._progress.set()
        self._progress = anyio.Event()
        return True

    def _announce(self, events: list[Event]) -> None:
        for event in events:
            self._deliver(event)

    async def close(self) -> None:
        """Commit what is queued and stop the writer."""
        self._closing = True
        self._wake.set()
        await self._stopped.wait()


class JournaledBus(EventBus):
    """An event bus whose events are committed to the store before subscribers get them."""

    def __init__(self, records: Records, recorder: Recorder, last_seq: int) -> None:
        super().__init__(last_seq)
        self.recorder = recorder
        self.journal = Journal(records, self.deliver)

    @property
    def last_seq(self) -> int:
        return self._seq

    def publish(self, agent_id: str, data: EventData) -> Event:
        if isinstance(data, EPHEMERAL):
            return self.flash(agent_id, data)
        event = self._number(agent_id, data)
        self.journal.add(self.recorder.ops(event), event)
        return event

    def close_subscribers(self) -> None:
        """End every subscriber's stream (their ``async for`` finishes): the hub is closing."""
        for stream in list(self._subscribers):
            stream.close()
        self._subscribers.clear()
        self._watchers.clear()


class JournaledLedger:
    """The usage ledger of a hub: a model call's row is written with the journal's next batch (in
    the transaction of the events around it: the call's step, its tool calls) rather than in one of
    its own, and is kept, in order, while the disk is full, as events are. What a key has spent is
    read once the rows queued before the read are committed."""

    def __init__(self, store: Store, journal: Journal) -> None:
        self._store = store
        self._journal = journal

    async def record_usage(self, row: UsageRow) -> None:
        self._journal.add([insert_usage(row)])

    async def spend(self, key: str, since: float = 0.0) -> float:
        await self._journal.committed()
        return await self._store.spend(key, since)
