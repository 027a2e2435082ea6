"""The journal: every event is written to the store, with the agent state it describes, before
anyone hears of it.

:class:`JournaledBus` is the hub's :class:`~dispatch.hub.events.EventBus`. ``publish`` stays
synchronous and never blocks the publisher: it numbers the event (continuing the store's ids), asks
the :class:`Recorder` for the writes that make the store match (a snapshot of the live agent taken
right then) and queues them. The :class:`Journal`'s writer task commits what is queued in one
transaction per batch (so many events share one commit and a step never waits on the store), then
hands that batch's events to the subscribers, in order. So a subscriber sees only committed events,
and :meth:`Journal.flush` is how a caller waits for its write to be acknowledged: it commits what is
queued itself when no batch is being written (the writer's next turn of the event loop may be
long in coming under load), and otherwise waits for the batch in flight and the next. The writer's
batches survive a crash of the hub as soon as they are committed; what a flush acknowledges is on
the disk too (a commit that waits for it, or a sync of the log), so it survives a power loss.

What the recorder writes per event:

    agent.spawned      the agent's row (spec as JSON, chat, root)
    agent.state        state, reason, usage, report, error (from the event when the agent is not live)
    agent.step         the transcript messages added since the last step, and the step count
    agent.model        the model and the spec
    agent.progress     the progress notes            agent.question   the question asked
    message.sent       the message (text included)    message.delivered   the step that read it
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
from dispatch.hub.agents.loop import Agent
from dispatch.hub.errors import RunError
from dispatch.hub.events import Event, EventBus
from dispatch.hub.store.records import (
    Op,
    Records,
    append_transcript,
    insert_agent,
    insert_events,
    insert_message,
    mark_delivered,
    update_agent,
)

log = logging.getLogger(__name__)


class Recorder:
    """Turns an event into the store writes that match it, from the live agent it concerns."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.lookup: Callable[[str], Agent | None] = lambda _: None
        """The live agent of an id (the tree's ``agents.get``, once the tree exists)."""
        self.saved: dict[str, int] = {}
        """How many transcript messages of each agent the store holds."""
        self.chat_of: dict[str, str | None] = {}
        self.chat_lookup: Callable[[str], str | None] = lambda _: None
        """The chat an agent works for (the chat service's ``chat_of``), when not known yet."""
        self.questions: dict[str, str] = {}
        self._tool_arguments: dict[str, str] = {}

    def ops(self, event: Event) -> list[Op]:
        agent = self.lookup(event.agent_id)
        handler = _HANDLERS.get(event.type)
        ops = [insert_events([event])]
        if handler is not None:
            ops += handler(self, event, agent)
        return ops

    def chat(self, agent_id: str) -> str | None:
        """The chat the agent (or its top agent) answers, if any."""
        known = self.chat_of.get(agent_id) or self.chat_lookup(agent_id)
        if known is not None:  # not known yet is asked again: a chat claims its agent just after the start
            self.chat_of[agent_id] = known
        return known

    def _usage(self, agent: Agent) -> dict[str, Any]:
        usage = agent.usage
        return {"tokens_in": usage.prompt_tokens, "tokens_out": usage.completion_tokens, "cost_usd": usage.cost_usd}

    def spawned(self, event: Event, agent: Agent | None) -> list[Op]:
        if agent is None:
            return []
        parent = agent.spec.parent_id
        chat = self.chat_of.get(agent.id) or (self.chat(parent) if parent else None)
        self.chat_of[agent.id] = chat
        self.saved[agent.id] = len(agent.transcript)
        row: dict[str, Any] = {"id": agent.id, "parent_id": parent, "chat_id": chat, "root": self.root}
        row |= {"name": agent.spec.name, "template": agent.spec.template, "task": agent.spec.task}
        row |= {"model": agent.model, "spec": agent.spec.model_dump_json(), "state": agent.state.value}
        row |= {"reason": agent.reason, "created_at": event.at, "updated_at": event.at, "progress": "[]"}
        return [insert_agent(row)]

    def state(self, event: Event, agent: Agent | None) -> list[Op]:
        state = str(event.data["state"])
        values: dict[str, Any] = {"state": state, "reason": event.data.get("reason", ""), "updated_at": event.at}
        until = event.data.get("until")
        values["waiting_until"] = times.seconds(until) if until else None
        values["question"] = self.questions.get(event.agent_id) if state == "waiting_user" else None
        if agent is not None:
            values |= self._usage(agent) | {"report": agent.report, "error": agent.error, "model": agent.model}
            values["chat_id"] = self.chat(agent.id)
        return [update_agent(event.agent_id, values)]

    def step(self, event: Event, agent: Agent | None) -> list[Op]:
        if agent is None:
            return []
        first = self.saved.get(agent.id, 0)
        added = [json.dumps(m, default=str) for m in agent.transcript[first:]]
        self.saved[agent.id] = first + len(added)
        index = int(event.data["index"])
        values = self._usage(agent) | {"steps": index, "updated_at": event.at}
        return [append_transcript(agent.id, first, index, added), update_agent(agent.id, values)]

    def model(self, event: Event, agent: Agent | None) -> list[Op]:
        values: dict[str, Any] = {"model": event.data["model"], "updated_at": event.at}
        if agent is not None:
            values["spec"] = agent.spec.model_dump_json()
        return [update_agent(event.agent_id, values)]

    def progress(self, event: Event, agent: Agent | None) -> list[Op]:
        notes = agent.progress if agent is not None else [str(event.data.get("text", ""))]
        return [update_agent(event.agent_id, {"progress": json.dumps(notes), "updated_at": event.at})]

    def question(self, event: Event, agent: Agent | None) -> list[Op]:
        self.questions[event.agent_id] = str(event.data.get("question", ""))
        return []

    def message_sent(self, event: Event, agent: Agent | None) -> list[Op]:
        data = event.data
        message = {"id": data["message_id"], "kind": data["kind"], "sender": data.get("sender", "user")}
        message |= {"text": data.get("text", ""), "sent_at": _seconds(data.get("sent_at"), event.at)}
        return [insert_message(event.agent_id, message)]

    def message_delivered(self, event: Event, agent: Agent | None) -> list[Op]:
        return [mark_delivered(str(event.data["message_id"]), int(event.data["step"]))]

    def tool_call(self, event: Event, agent: Agent | None) -> list[Op]:
        self._tool_arguments[str(event.data.get("call_id"))] = str(event.data.get("arguments", ""))
        return []

    def tool_result(self, event: Event, agent: Agent | None) -> list[Op]:
        arguments = self._tool_arguments.pop(str(event.data.get("call_id")), "")
        if event.data.get("is_error"):
            log.warning(
                "tool %s failed for agent %s (%s): %s; arguments: %s",
                event.data.get("name"),
                event.agent_id,
                " > ".join(self.chain(event.agent_id)),
                str(event.data.get("text", "")).splitlines()[:1],
                arguments[:500],
            )
        return []

    def chain(self, agent_id: str) -> list[str]:
        """Names from the top agent down to this one (as far as the live tree knows them)."""
        names: list[str] = []
        agent = self.lookup(agent_id)
        while agent is not None:
            names.insert(0, f"{agent.spec.name}[{agent.id}]")
            parent = agent.spec.parent_id
            agent = self.lookup(parent) if parent else None
        return names or [agent_id]


def _seconds(sent_at: object, default: float) -> float:
    """An event's ISO time as the store keeps it; ``default`` (the event's own time) without one."""
    return times.seconds(sent_at) if isinstance(sent_at, str) and sent_at else default


_Handler = Callable[[Recorder, Event, "Agent | None"], list[Op]]
_HANDLERS: dict[str, _Handler] = {
    "agent.spawned": Recorder.spawned,
    "agent.state": Recorder.state,
    "agent.step": Recorder.step,
    "agent.model": Recorder.model,
    "agent.progress": Recorder.progress,
    "agent.question": Recorder.question,
    "message.sent": Recorder.message_sent,
    "message.delivered": Recorder.message_delivered,
    "tool.call": Recorder.tool_call,
    "tool.result": Recorder.tool_result,
}


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
                raise RunError("the hub's store is closed; the write was not saved")
            if self._turn.locked():
                await self._progress.wait()
            else:
                await self._commit_queued()
        if self._failed_through >= target:
            raise RunError("the hub could not save to its store (see hub.log in the data directory)")
        if self._synced < target:  # the writer committed it without waiting for the disk
            synced = self._committed
            await self._records.sync_log()
            self._synced = max(self._synced, synced)

    async def run(self) -> None:
        """The writer task: commit and deliver until :meth:`close`, then drain what is left."""
        try:
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                await self._commit_queued()
                if self._closing:
                    return
        finally:
            self._stopped.set()
            self._progress.set()

    async def _commit_queued(self) -> None:
        async with self._turn:
            while self._ops or self._events:
                await self._commit_batch()

    async def _commit_batch(self) -> None:
        ops, events, target = self._ops, self._events, self._queued
        self._ops, self._events = [], []
        durable = self._durable_wanted > self._synced
        started = time.perf_counter()
        try:
            with anyio.CancelScope(shield=True):  # a batch is written whole, even while the hub stops
                await self._records.apply(ops, durable=durable)
            if durable:
                self._synced = target
        except Exception:
            log.exception("could not write %d events to the store", len(events))
            self._failed_through = target
        self.batches += 1
        if time.perf_counter() - started > 1.0:
            log.warning("a store write of %d events took %.1f s", len(events), time.perf_counter() - started)
        for event in events:
            self._deliver(event)
        self._committed = target
        self._progress.set()
        self._progress = anyio.Event()

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

    def publish(self, type: str, agent_id: str, **data: Any) -> Event:
        self._seq += 1
        event = Event(seq=self._seq, at=time.time(), type=type, agent_id=agent_id, data=data)
        self.journal.add(self.recorder.ops(event), event)
        return event

    def close_subscribers(self) -> None:
        """End every subscriber's stream (their ``async for`` finishes): the hub is closing."""
        for stream in list(self._subscribers):
            stream.close()
        self._subscribers.clear()
