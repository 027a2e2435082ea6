"""The event bus's hand-over: a burst of queued events reaches a subscriber without a turn of the
event loop per event (with hundreds of agents ready to run, each turn is long)."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from dispatch.hub.events import AgentStateChanged, Event, EventBus, each_queued, stored_event
from tests.loop_turns import counting_turns


@pytest.mark.anyio
async def test_a_queued_burst_is_handed_on_in_order_and_in_one_go() -> None:
    bus = EventBus()
    received: list[Event] = []
    async with bus.subscribe() as stream, counting_turns() as turns:
        for n in range(1000):
            bus.publish(f"agent-{n}", AgentStateChanged(state="running"))
        turns_before = turns.count
        async for event in each_queued(stream):
            received.append(event)
            if len(received) == 1000:
                break
        turns_during = turns.count - turns_before
    assert [e.agent_id for e in received] == [f"agent-{n}" for n in range(1000)]
    assert [e.seq for e in received] == list(range(1, 1001))
    assert turns_during <= 2, f"the other task ran {turns_during} times while 1000 queued events were read"


@pytest.mark.anyio
async def test_the_stream_waits_when_empty_and_ends_when_closed() -> None:
    send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=10)
    received: list[str] = []

    async def read() -> None:
        async for event in each_queued(receive):
            received.append(event.type)

    def event(seq: int, kind: str) -> Event:
        return stored_event(seq, 0.0, kind, "a", {})

    async with anyio.create_task_group() as group:
        group.start_soon(read)
        await anyio.wait_all_tasks_blocked()
        assert received == []
        send.send_nowait(event(1, "agent.spawned"))
        await anyio.wait_all_tasks_blocked()
        assert received == ["agent.spawned"]
        send.send_nowait(event(2, "agent.state"))
        send.close()  # the reader gets what was queued, then its loop ends
    assert received == ["agent.spawned", "agent.state"]
