"""The journal's durability: the writer's batches are committed (they survive a crash of the hub)
without waiting for the disk; what a flush acknowledges is on the disk before the flush returns."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from sqlite_utils import Database

from dispatch.hub.store.db import DB_NAME, Store
from dispatch.hub.store.journal import Journal
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
