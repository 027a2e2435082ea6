"""The event bus's hand-over: a burst of queued events reaches a subscriber without a turn of the
event loop per event (with hundreds of agents ready to run, each turn is long). The events' wire
JSON, kind by kind, and how the store's events read back, known kinds or not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import anyio
import anyio.lowlevel
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from sqlite_utils import Database

from dispatch.hub.cli.logs import ActivityLog
from dispatch.hub.events import (
    AgentCompacted,
    AgentModelSwitched,
    AgentProgress,
    AgentQuestion,
    AgentReported,
    AgentResumed,
    AgentSpawned,
    AgentStateChanged,
    AgentStepped,
    ApprovalRequested,
    ApprovalResolved,
    ArtifactSaved,
    ChangedFile,
    ConfigRefused,
    ConfigReloaded,
    DataDirFull,
    DataDirWritable,
    Event,
    EventBus,
    EventData,
    FilesChanged,
    KnownEvent,
    MessageDelivered,
    MessageSent,
    ModelDelta,
    OtherEvent,
    SkillLoaded,
    Spent,
    ToolCalled,
    ToolHostLost,
    ToolHostStarted,
    ToolOutput,
    ToolReturned,
    each_queued,
    stored_event,
)
from dispatch.hub.store.db import DB_NAME, Store
from dispatch.hub.store.records import Records
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


AT = 1767225600.0


def _wire(agent_id: str, data: EventData, seq: int = 7) -> dict[str, Any]:
    return json.loads(Event(seq=seq, at=AT, agent_id=agent_id, data=data).model_dump_json())


def _envelope(type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"seq": 7, "at": AT, "type": type, "agent_id": "a-1", "data": data}


SPENT = Spent(tokens_in=900, tokens_out=40, cost_usd=0.002)
WIRE: list[tuple[EventData, dict[str, Any]]] = [
    (
        AgentSpawned(
            parent_id="a-0", name="worker", template="worker", model="coding", task="fix it", scope=["src"],
            detached=False, skills=["builtin:report"], chat_id=None, spec_json='{"id": "a-1"}',
        ),
        _envelope("agent.spawned", {
            "parent_id": "a-0", "name": "worker", "template": "worker", "model": "coding", "task": "fix it",
            "scope": ["src"], "detached": False, "skills": ["builtin:report"], "chat_id": None,
        }),
    ),
    (
        AgentResumed(
            parent_id=None, name="dispatch", template=None, model="heavy", task="go", scope=["."], detached=True,
            skills=[], chat_id="c-1",
        ),
        _envelope("agent.resumed", {
            "parent_id": None, "name": "dispatch", "template": None, "model": "heavy", "task": "go", "scope": ["."],
            "detached": True, "skills": [], "chat_id": "c-1",
        }),
    ),
    (
        AgentStateChanged(state="running", reason="", error=None, spent=SPENT),
        _envelope("agent.state", {"state": "running", "reason": ""}),
    ),
    (
        AgentStateChanged(state="waiting_key", reason="rate limit", until="2026-01-01T01:00:00+00:00"),
        _envelope("agent.state", {"state": "waiting_key", "reason": "rate limit",
                                  "until": "2026-01-01T01:00:00+00:00"}),
    ),
    (
        AgentStateChanged(state="interrupted", reason="the hub stopped", steps=3),
        _envelope("agent.state", {"state": "interrupted", "reason": "the hub stopped", "steps": 3}),
    ),
    (
        AgentStepped(
            index=2, text=None, tool_calls=["read_file"], tokens_in=500, tokens_out=20, cost_usd=0.001, first=3,
            messages=[{"role": "assistant", "content": None}], spent=SPENT,
        ),
        _envelope("agent.step", {
            "index": 2, "text": None, "tool_calls": ["read_file"], "tokens_in": 500, "tokens_out": 20,
            "cost_usd": 0.001,
        }),
    ),
    (
        AgentCompacted(
            tokens_before=7000, tokens_after=3000, model="light", compactions=2, upto=12, summary="[Context...",
            compaction_json='{"summary": "[Context..."}', spent=SPENT,
        ),
        _envelope("agent.compacted", {
            "tokens_before": 7000, "tokens_after": 3000, "model": "light", "compactions": 2, "upto": 12,
            "summary": "[Context...",
        }),
    ),
    (AgentReported(report="done: 3 files"), _envelope("agent.report", {"report": "done: 3 files"})),
    (AgentModelSwitched(model="heavy"), _envelope("agent.model", {"model": "heavy"})),
    (AgentProgress(text="half way"), _envelope("agent.progress", {"text": "half way"})),
    (AgentQuestion(question="which branch?"), _envelope("agent.question", {"question": "which branch?"})),
    (SkillLoaded(skill="builtin:tdd"), _envelope("agent.skill", {"skill": "builtin:tdd"})),
    (
        MessageSent(message_id="m-1", kind="instruction", sender="user", text="mind the tests"),
        _envelope("message.sent", {"message_id": "m-1", "kind": "instruction", "sender": "user",
                                   "text": "mind the tests"}),
    ),
    (MessageDelivered(message_id="m-1", step=4), _envelope("message.delivered", {"message_id": "m-1", "step": 4})),
    (
        ToolCalled(call_id="c-1", name="read_file", arguments='{"path": "a.py"}'),
        _envelope("tool.call", {"call_id": "c-1", "name": "read_file", "arguments": '{"path": "a.py"}'}),
    ),
    (
        ToolReturned(call_id="c-1", name="read_file", is_error=True, text="no such file", seconds=0.25),
        _envelope("tool.result", {"call_id": "c-1", "name": "read_file", "is_error": True, "text": "no such file",
                                  "seconds": 0.25}),
    ),
    (
        ModelDelta(step=3, text='{"path": "a', tool="read_file"),
        _envelope("model.delta", {"step": 3, "text": '{"path": "a', "tool": "read_file"}),
    ),
    (
        ModelDelta(step=3, text="Reading ", tool=None),
        _envelope("model.delta", {"step": 3, "text": "Reading ", "tool": None}),
    ),
    (
        ToolOutput(call_id="c-2", name="run", text="collected 3 items\n"),
        _envelope("tool.output", {"call_id": "c-2", "name": "run", "text": "collected 3 items\n"}),
    ),
    (
        ToolHostStarted(engine="ray", node_id="n-1", address="10.0.0.2", files="copy"),
        _envelope("toolhost.started", {"engine": "ray", "node_id": "n-1", "address": "10.0.0.2", "files": "copy"}),
    ),
    (
        ToolHostLost(node_id="n-1", address="10.0.0.2", reason="its tool host on Ray node n-1 was lost"),
        _envelope("toolhost.lost", {"node_id": "n-1", "address": "10.0.0.2",
                                    "reason": "its tool host on Ray node n-1 was lost"}),
    ),
    (
        FilesChanged(before="t1", after="t2", files=[ChangedFile(path="a.py", before=None, after="100644 b1")]),
        _envelope("files.changed", {"before": "t1", "after": "t2",
                                    "files": [{"path": "a.py", "before": None, "after": "100644 b1"}]}),
    ),
    (
        ArtifactSaved(artifact_id="ar-1", kind="plan", title="Migration"),
        _envelope("artifact.saved", {"artifact_id": "ar-1", "kind": "plan", "title": "Migration"}),
    ),
    (
        ApprovalRequested(
            approval_id="ap-1", kind="path", chain=["dispatch", "worker"], path="/etc/hosts", operation="read",
            checkpoint=None, server=None, content=None, created_at="2026-01-01T00:00:00.000000+00:00",
            auto_approve_at=None,
        ),
        _envelope("approval.requested", {
            "approval_id": "ap-1", "kind": "path", "chain": ["dispatch", "worker"], "path": "/etc/hosts",
            "operation": "read", "checkpoint": None, "server": None, "content": None, "diff": None,
            "created_at": "2026-01-01T00:00:00.000000+00:00", "auto_approve_at": None,
        }),
    ),
    (
        ApprovalResolved(approval_id="ap-1", state="approved", decided_by="user", remember="session"),
        _envelope("approval.resolved", {"approval_id": "ap-1", "state": "approved", "decided_by": "user",
                                        "remember": "session"}),
    ),
    (
        ConfigReloaded(restart_needed=["limits"]),
        _envelope("config.reloaded", {"restart_needed": ["limits"]}),
    ),
    (
        ConfigRefused(error="config.yaml line 1: limits.running_agents: should be at least 1"),
        _envelope("config.refused", {"error": "config.yaml line 1: limits.running_agents: should be at least 1"}),
    ),
    (
        DataDirFull(error="the data directory /d is full (No space left on device)"),
        _envelope("store.full", {"error": "the data directory /d is full (No space left on device)"}),
    ),
    (DataDirWritable(), _envelope("store.writable", {})),
]  # fmt: skip


@pytest.mark.parametrize(("data", "wire"), WIRE, ids=[w["type"] for _, w in WIRE])
def test_each_kind_goes_on_the_wire_as_documented_and_reads_back_from_the_store(
    data: EventData, wire: dict[str, Any]
) -> None:
    assert _wire("a-1", data) == wire  # journal-only fields (spec, messages, usage so far, error) stay off it
    for at, agent_id in ((AT, "a-1"), (1796599960.2772872, "a-ü\u2028"), (0.1, "hub")):
        event = Event(seq=7, at=at, agent_id=agent_id, data=data)
        assert event.wire == event.model_dump_json()  # what clients get, its data encoded once for the store too
        assert event.data_json == event.data.model_dump_json()
    published = EventBus(6).publish("a-1", data)  # made by the bus without validating again: the same event
    validated = Event(seq=published.seq, at=published.at, agent_id="a-1", data=data)
    assert (published.wire, published.model_dump(), published.type) == (
        validated.model_dump_json(),
        validated.model_dump(),
        wire["type"],
    )
    back = stored_event(7, AT, wire["type"], "a-1", wire["data"])
    assert type(back.data) is type(data)
    assert back.model_dump() == wire


def test_every_kind_has_a_wire_snapshot() -> None:
    kinds = {t.model_fields["type"].default for t in get_args(get_args(KnownEvent)[0])}
    assert kinds == {w["type"] for _, w in WIRE}


@pytest.mark.anyio
async def test_events_of_kinds_this_version_does_not_know_replay_as_stored(tmp_path: Path) -> None:
    """An event the store holds under an unknown type, or with fields that no longer fit its type
    (written by another version), is read back as it is stored: a replay and `dispatch logs` go on."""
    rows = [
        (1, "agent.progress", {"text": "known"}),
        (2, "chat.renamed", {"title": "Billing"}),
        (3, "agent.state", {"state": "running", "reason": "", "cpu": 0.5}),
        (4, "agent.step", {"index": 1}),
        (5, "agent.progress", {"text": "still going"}),
    ]
    async with Store.open(tmp_path / DB_NAME) as store:

        def write(db: Database) -> None:
            for seq, kind, data in rows:
                db.execute("insert into events (id, at, type, agent_id, data) values (?, ?, ?, 'a-1', ?)",
                           [seq, AT, kind, json.dumps(data)])  # fmt: skip

        await store.transaction(write, durable=True)
        replayed = await Records(store).events_after(0, limit=10)

    assert [type(e.data) for e in replayed] == [AgentProgress, OtherEvent, OtherEvent, OtherEvent, AgentProgress]
    assert [e.model_dump() for e in replayed] == [
        {"seq": seq, "at": AT, "type": kind, "agent_id": "a-1", "data": data} for seq, kind, data in rows
    ]
    lines = [ActivityLog().line(e) for e in replayed]
    assert lines[1].endswith('chat.renamed {"title": "Billing"}')
    assert lines[4].endswith("progress: still going")


@pytest.mark.anyio
async def test_an_ephemeral_event_reaches_only_who_asks_numbered_as_the_last_event_before_it() -> None:
    bus = EventBus(last_seq=40)
    async with bus.subscribe() as plain, bus.subscribe(ephemeral=True) as watching:
        assert bus.watched
        bus.publish("a-1", AgentProgress(text="one"))
        delta = bus.publish("a-1", ModelDelta(step=1, text="Hel", tool=None))
        bus.publish("a-1", AgentProgress(text="two"))
        assert delta.seq == 41 and delta.ephemeral
        assert [e.seq for e in _drained(plain)] == [41, 42]
        assert [(e.seq, e.type) for e in _drained(watching)] == [
            (41, "agent.progress"), (41, "model.delta"), (42, "agent.progress")
        ]  # fmt: skip
    assert not bus.watched


def _drained(stream: MemoryObjectReceiveStream[Event]) -> list[Event]:
    found: list[Event] = []
    while True:
        try:
            found.append(stream.receive_nowait())
        except anyio.WouldBlock:
            return found
