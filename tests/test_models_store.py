"""The store: migrations on a fresh database, file modes, and the usage ledger's queries."""

from __future__ import annotations

import functools
import sqlite3
import stat
import threading
from pathlib import Path

import anyio
import pytest
from sqlite_utils import Database

from dispatch.hub.llm.ledger import UsageRow
from dispatch.hub.store.db import DB_NAME, Store, data_dir
from dispatch.hub.store.schema import MIGRATIONS

DAY = 86_400.0
REGISTERED = [m.name for m in MIGRATIONS.pending(Database(memory=True))]
"""Every migration the code registers, in order (m001_usage first; the hub's run, chat and approval
tables after it)."""
T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC


def test_migrations_on_a_fresh_database_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "nested" / "dispatch-home"
    monkeypatch.setenv("DISPATCH_HOME", str(home))
    assert data_dir() == home

    store = Store.open()
    try:
        assert store.path == home / DB_NAME
        assert store.applied_migrations() == REGISTERED and REGISTERED[0] == "m001_usage"
        assert set(store.db.table_names()) >= {"_migrations", "usage"}
        columns = {c.name for c in store.db.table("usage").columns}
        assert {"at", "agent_id", "key", "model", "tokens_in", "tokens_out", "cost_usd", "latency_s"} <= columns
        assert store.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    finally:
        store.close()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / DB_NAME).stat().st_mode) == 0o600

    again = Store.open()
    try:
        assert again.applied_migrations() == REGISTERED, "applied once"
    finally:
        again.close()
    with sqlite3.connect(home / DB_NAME) as raw:
        assert raw.execute("select name from _migrations").fetchall() == [(name,) for name in REGISTERED]


def test_a_new_migration_is_applied_once_to_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "db" / DB_NAME
    Store.open(path).close()

    @MIGRATIONS()
    def m999_test_only(db: Database) -> None:
        db.table("later").create({"id": int, "note": str}, pk="id")

    try:
        for _ in range(2):
            store = Store.open(path)
            assert store.applied_migrations() == [*REGISTERED, "m999_test_only"]
            assert "later" in store.db.table_names()
            store.close()
    finally:
        MIGRATIONS._migrations.pop()  # pyright: ignore[reportPrivateUsage]


def row(agent: str, key: str, model: str, cost: float, at: float = T0, outcome: str = "ok") -> UsageRow:
    tokens = int(cost * 1000)
    return UsageRow(at, agent, key, "openai", model, "heavy", tokens, tokens // 2, cost, 0.1, outcome)


@pytest.mark.anyio
async def test_usage_totals_per_agent_subtree_key_model_and_day(tmp_path: Path) -> None:
    async with Store.open(tmp_path / DB_NAME) as store:
        for entry in [
            row("top", "k1", "m-big", 0.5),
            row("child", "k1", "m-small", 0.1),
            row("child", "k2", "m-small", 0.2, at=T0 + DAY),
            row("grandchild", "k2", "m-big", 0.0, outcome="quota"),
            row("other", "k2", "m-big", 1.0, at=T0 + DAY),
        ]:
            await store.record_usage(entry)

        by_agent = await store.usage_by("agent")
        assert {a: (u.cost_usd, u.calls) for a, u in by_agent.items()} == {
            "child": (pytest.approx(0.3), 2),
            "grandchild": (0.0, 0),
            "other": (1.0, 1),
            "top": (0.5, 1),
        }
        subtree = await store.usage_total(agent_ids=["top", "child", "grandchild"])
        assert (subtree.cost_usd, subtree.calls, subtree.prompt_tokens) == (pytest.approx(0.8), 3, 800)
        assert {k: u.cost_usd for k, u in (await store.usage_by("key")).items()} == pytest.approx(
            {"k1": 0.6, "k2": 1.2}
        )
        assert {m: u.calls for m, u in (await store.usage_by("model")).items()} == {"m-big": 2, "m-small": 2}
        assert {d: u.cost_usd for d, u in (await store.usage_by("day")).items()} == pytest.approx(
            {"2027-01-15": 0.6, "2027-01-16": 1.2}
        )
        assert await store.spend("k2") == pytest.approx(1.2)
        assert await store.spend("k2", since=T0 + DAY) == pytest.approx(1.2)
        assert await store.spend("k1", since=T0 + DAY) == 0.0
        assert (await store.usage_total(agent_ids=[])).calls == 0
        assert [r.agent_id for r in await store.usage_rows(since=T0 + 1)] == ["child", "other"]


@pytest.mark.anyio
async def test_calls_run_on_the_loop_thread_unless_offloaded_and_never_overlap(tmp_path: Path) -> None:
    async with Store.open(tmp_path / DB_NAME) as store:
        loop_thread = threading.get_ident()
        assert await store.call(lambda _: threading.get_ident()) == loop_thread
        assert await store.call(lambda _: threading.get_ident(), offload=True) != loop_thread

        reading, release = threading.Event(), threading.Event()
        order: list[str] = []

        def long_read(_: Database) -> None:
            reading.set()
            release.wait(10)
            order.append("read")

        async with anyio.create_task_group() as group:
            group.start_soon(functools.partial(store.call, long_read, offload=True))
            await anyio.to_thread.run_sync(reading.wait)
            group.start_soon(store.call, lambda _: order.append("write"))
            await anyio.wait_all_tasks_blocked()
            assert order == []  # the write waits for the read in the worker thread
            release.set()
        assert order == ["read", "write"]


@pytest.mark.anyio
async def test_a_hubs_usage_row_is_stored_with_the_events_after_it_and_counted_by_the_next_budget_read(
    tmp_path: Path,
) -> None:
    """A hub writes each call's ledger row with the journal's next batch: by the time a client
    hears of the event published after the call, the row is in the database; and what a key has
    spent, read right after the call, counts it."""
    from dispatch.hub.events import AgentProgress
    from dispatch.hub.store.journal import JournaledBus, JournaledLedger, Recorder
    from dispatch.hub.store.records import Records

    async with Store.open(tmp_path / DB_NAME) as store, anyio.create_task_group() as writer:
        bus = JournaledBus(Records(store), Recorder(tmp_path), 0)
        writer.start_soon(bus.journal.run)
        ledger = JournaledLedger(store, bus.journal)
        async with bus.subscribe() as heard:
            await ledger.record_usage(UsageRow(T0, "top", "k1", "openai", "m", "m", 10, 2, 0.25))
            assert await ledger.spend("k1") == pytest.approx(0.25)  # read at once: the row is counted

            await ledger.record_usage(UsageRow(T0 + 1, "top", "k1", "openai", "m", "m", 10, 2, 0.5))
            bus.publish("top", AgentProgress(text="after the call"))
            event = await heard.receive()
            with sqlite3.connect(tmp_path / DB_NAME) as outside:  # what another reader of the file sees
                assert outside.execute("select count(*), sum(cost_usd) from usage").fetchone() == (2, 0.75)
            assert event.type == "agent.progress"
        await bus.journal.close()
