"""The event bus: every change in the tree of agents, in order, for whoever listens.

Agents and the tree publish; the CLI's live view, the store, the API's WebSocket and the MCP face
subscribe. Publishing never blocks the publisher: each subscriber has its own unbounded queue.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import BaseModel, ConfigDict


class Event(BaseModel):
    """One thing that happened: ``agent.spawned``, ``agent.state``, ``tool.call``, ``tool.result``,
    ``message.sent``, ``message.delivered``, ``agent.progress``, ``model.call``, ``agent.report``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    at: float
    type: str
    agent_id: str
    data: dict[str, Any]


class EventBus:
    """Fan-out of events to subscribers, with a sequence number per bus."""

    def __init__(self, last_seq: int = 0) -> None:
        self._seq = last_seq
        """The last number given; the next event gets the one after (a hub continues its store's)."""
        self._subscribers: list[MemoryObjectSendStream[Event]] = []

    def publish(self, type: str, agent_id: str, **data: Any) -> Event:
        self._seq += 1
        event = Event(seq=self._seq, at=time.time(), type=type, agent_id=agent_id, data=data)
        self.deliver(event)
        return event

    def deliver(self, event: Event) -> None:
        """Hand ``event`` to every subscriber (a journaled bus does so once the event is committed)."""
        for stream in list(self._subscribers):
            try:
                stream.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.remove(stream)

    @asynccontextmanager
    async def subscribe(self) -> AsyncGenerator[MemoryObjectReceiveStream[Event]]:
        """A stream of every event published while the context is open."""
        send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=math.inf)
        self._subscribers.append(send)
        try:
            yield receive
        finally:
            if send in self._subscribers:
                self._subscribers.remove(send)
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
