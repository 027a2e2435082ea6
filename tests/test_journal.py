"""The journal's durability: the writer's batches are committed (they survive a crash of the hub)
without waiting for the disk; what a flush acknowledges is on the disk before the flush returns.
And what it records comes from the events alone."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from sqlite_utils import Database

from dispatch.hub.agents.spec import AgentSpec
from dispatch.hub.events import AgentProgress, AgentReported, AgentSpawned, AgentStateChanged, AgentStepped, Spent
from dispatch.hub.store.db import DB_NAME, Store
from dispatch.hub.store.journal import Journal, JournaledBus, Recorder
from dispatch.hub.store.records import Records

NORMAL, FULL = 1, 2  # PRAGMA synchronous values


class SyncCountingRecords(Records):
    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.syncs = 0

    async def sync_log(self) -> None:
        self.syncs += 1
        await super().sync_log()


@pytest.mark.anyio
async def test_flushed_writes_reach_the_disk_and_the_writers_batches_only_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced_files: list[str] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced_files.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    seen: list[int] = []

    def probe(db: Database) -> None:  # a journal write that notes how its transaction will commit
        seen.append(int(db.execute("PRAGMA synchronous").fetchone()[0]))
        db.execute("insert into events (id, at, type, agent_id, data) values (?, 0, 'probe', 'a', '{}')", [len(seen)])

    async with Store.open(tmp_path / DB_NAME) as store:
        records = SyncCountingRecords(store)
        journal = Journal(records, deliver=lambda _: None)
        async with anyio.create_task_group() as group:
            group.start_soon(journal.run)

            journal.add([probe])  # the writer's own batch: committed, not waited on the disk for
            with anyio.fail_after(10):
                while journal.batches < 1:
                    await anyio.sleep(0.01)
            assert seen == [NORMAL]

            journal.add([probe])
            await journal.flush()  # committed by the flush itself, waiting for the disk
            assert seen == [NORMAL, FULL] and records.syncs == 0

            journal.add([probe])
            with anyio.fail_after(10):
                while journal.batches < 3:
                    await anyio.sleep(0.01)
            assert seen == [NORMAL, FULL, NORMAL]
            await journal.flush()  # the writer had committed it: the log is synced instead
            assert records.syncs == 1
            assert synced_files == [str(tmp_path / (DB_NAME + "-wal"))]

            await journal.flush()  # nothing new: nothing to wait for
            assert records.syncs == 1
            await journal.close()
        rows = await store.call(lambda db: [r["id"] for r in db.query("select id from events order by id")])
        assert rows == [1, 2, 3]


@pytest.mark.anyio
async def test_the_journal_records_what_the_events_say_with_no_tree_to_ask(tmp_path: Path) -> None:
    """The recorder has only the events: the agent's row, its transcript step by step, its notes,
    usage, report and chat come from them (no live agent exists here)."""
    spec = AgentSpec(id="a-top", name="dispatch", task="sum it up", model="heavy")
    spent = Spent(tokens_in=120, tokens_out=8, cost_usd=0.01)
    first = [{"role": "system", "content": "rules"}, {"role": "user", "content": "sum it up"}]
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "ls"}}]}
    second = [{"role": "tool", "tool_call_id": "c1", "content": "a.py"}, {"role": "assistant", "content": "one file"}]
    async with Store.open(tmp_path / DB_NAME) as store:
        records = Records(store)
        bus = JournaledBus(records, Recorder(tmp_path), last_seq=0)
        async with anyio.create_task_group() as group:
            group.start_soon(bus.journal.run)
            bus.publish(spec.id, AgentSpawned(
                parent_id=None, name="dispatch", template=None, model="heavy", task="sum it up", scope=["."],
                detached=False, skills=[], chat_id="c-1", spec_json=spec.model_dump_json(),
            ))  # fmt: skip
            bus.publish("a-kid", AgentSpawned(
                parent_id=spec.id, name="worker", template="worker", model="coding", task="count", scope=[],
                detached=False, skills=[], spec_json=spec.model_copy(update={"id": "a-kid"}).model_dump_json(),
            ))  # fmt: skip
            bus.publish(spec.id, AgentStateChanged(state="running", spent=Spent(tokens_in=0, tokens_out=0, cost_usd=0)))
            bus.publish(spec.id, AgentStepped(
                index=1, text=None, tool_calls=["ls"], tokens_in=100, tokens_out=5, cost_usd=0.008, first=0,
                messages=[*first, call], spent=Spent(tokens_in=100, tokens_out=5, cost_usd=0.008),
            ))  # fmt: skip
            bus.publish(spec.id, AgentProgress(text="listed"))
            bus.publish(spec.id, AgentProgress(text="counted"))
            bus.publish(spec.id, AgentStepped(
                index=2, text="one file", tool_calls=[], tokens_in=20, tokens_out=3, cost_usd=0.002, first=3,
                messages=second, spent=spent,
            ))  # fmt: skip
            bus.publish(spec.id, AgentStateChanged(state="done", spent=spent))
            bus.publish(spec.id, AgentReported(report="one file"))
            await bus.journal.flush()
            row, kid = await records.agent_row(spec.id), await records.agent_row("a-kid")
            transcript = await records.transcript(spec.id)
            await bus.journal.close()

    assert row is not None and kid is not None
    assert (row.state, row.report, row.steps, row.progress) == ("done", "one file", 2, ["listed", "counted"])
    assert (row.tokens_in, row.tokens_out, row.cost_usd) == (120, 8, 0.01)
    assert row.spec == spec.model_copy(update={"root": str(tmp_path)})  # the project it worked in, from its row
    assert (row.root, row.chat_id, kid.chat_id) == (str(tmp_path), "c-1", "c-1")  # the child files under its top's chat
    assert transcript == [*first, call, *second]
