"""The database: the connection, its durability and its locking (SQLite through sqlite-utils, WAL).

The file is ``dispatch.db`` in the data directory (``$DISPATCH_HOME``, default
``~/.local/share/dispatch``; the directory is created 0700, the file 0600). Opening it applies the
schema's migrations (:mod:`dispatch.hub.store.schema`, where the tables are described). This module and
:mod:`dispatch.hub.store.records` (the agents, transcripts, messages, events and artifacts, through
:meth:`Store.call`) are the ones that speak SQL; the store keeps the usage ledger itself, and the
rows of chats, approvals, detached agents' threads and outside servers' pinned tool lists.

:class:`Store` does every read and write. Calls are async, on the one connection, serialised by
an ``anyio.Lock``; a write returns only after its commit. A call runs on the event loop's own
thread: handing it to a worker thread costs far more under load, since SQLite's module lets go of
the interpreter lock for every row it steps through and must win it back from the busy loop each
time (bench/README.md has the figures). Only reads that may scan a long history (usage reports,
chat search, every stored agent, a whole transcript) pass ``offload=True`` and run in a worker
thread, still one at a time.

Durability. The connection runs WAL with ``synchronous = NORMAL``: a commit survives a crash of the
hub at once, and a power loss once the log is synced. A write that is acknowledged to someone (the
API's answer, a caller of :meth:`Store.transaction`, a flush of the journal) is synced before the
answer: its transaction commits with ``synchronous = FULL``, or, when the journal had already
committed it, the log file is synced (:meth:`Store.sync_log`). The journal's own stream of agent
steps and events, and the usage ledger, commit without waiting for the disk: an fsync per batch,
on the event loop, would stall every agent while the disk catches up.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
from sqlite_utils import Database

from dispatch.hub.errors import StoreFull
from dispatch.hub.llm.ledger import UsageRow
from dispatch.hub.llm.types import Usage
from dispatch.hub.store.schema import MIGRATIONS

log = logging.getLogger(__name__)
T = TypeVar("T")
Row = dict[str, Any]
DB_NAME = "dispatch.db"
UsageGroup = Literal["agent", "key", "model", "day"]
_GROUP_SQL: dict[UsageGroup, str] = {
    "agent": "agent_id",
    "key": "key",
    "model": "model",
    "day": "date(at, 'unixepoch')",
}


def data_dir() -> Path:
    """``$DISPATCH_HOME``, or ``~/.local/share/dispatch``."""
    configured = os.environ.get("DISPATCH_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".local" / "share" / "dispatch"


def _usage(row: dict[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=int(row["tokens_in"] or 0),
        completion_tokens=int(row["tokens_out"] or 0),
        cache_read_tokens=int(row["cache_read_tokens"] or 0),
        cache_write_tokens=int(row["cache_write_tokens"] or 0),
        cost_usd=float(row["cost_usd"] or 0.0),
        calls=int(row["calls"] or 0),
    )


_TOTALS = (
    "coalesce(sum(tokens_in), 0) as tokens_in, coalesce(sum(tokens_out), 0) as tokens_out, "
    "coalesce(sum(cache_read_tokens), 0) as cache_read_tokens, "
    "coalesce(sum(cache_write_tokens), 0) as cache_write_tokens, "
    "coalesce(sum(cost_usd), 0) as cost_usd, coalesce(sum(outcome = 'ok'), 0) as calls"
)


def fts_words(text: str) -> str:
    """An FTS5 query that finds every word of ``text`` as a word, never as query syntax: each
    whitespace- or control-separated word double-quoted (inner quotes doubled); no words: one
    empty phrase, which matches nothing."""
    words = [w for w in re.split(r"[\s\x00-\x1f]+", text) if w]
    return " ".join('"' + w.replace('"', '""') + '"' for w in words) or '""'


def _sync_file(path: Path) -> None:
    if not path.exists():
        return  # no log: every commit is in the database file already
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
FULL_RETRY_S = (0.5, 5.0)
"""While the disk is full, a write held for later is tried again after the first delay, doubling up
to the second."""


def no_space(error: BaseException) -> bool:
    """Whether ``error`` says the disk (or the user's quota) is full."""
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(error, OSError) and error.errno in _NO_SPACE


_USAGE_COLUMNS = [f.name for f in fields(UsageRow)]
_INSERT_USAGE = f"insert into usage ({', '.join(_USAGE_COLUMNS)}) values ({', '.join('?' for _ in _USAGE_COLUMNS)})"


def insert_usage(row: UsageRow) -> Callable[[Database], None]:
    """The write of one ledger row, for a transaction (the store's own, or a journal batch's)."""

    def write(db: Database) -> None:
        db.conn.execute(_INSERT_USAGE, [getattr(row, name) for name in _USAGE_COLUMNS])  # astuple deep-copies

    return write


class Store:
    """The database of one hub. Open with :meth:`open` (or :meth:`memory` in tests); close at exit."""

    def __init__(self, db: Database, path: Path | None = None) -> None:
        self.db = db
        self.path = path
        self._lock = anyio.Lock(fast_acquire=True)  # a free lock is taken without a turn of the loop
        self.full: StoreFull | None = None
        """While the disk is full: the error of the last write that failed (None once one succeeds)."""
        self._space = anyio.Event()
        self._space.set()
        self._watchers: list[Callable[[StoreFull | None], None]] = []

    @classmethod
    def open(cls, path: Path | None = None) -> Store:
        """Open (creating and migrating) ``path``, by default ``dispatch.db`` in :func:`data_dir`."""
        if path is None:
            home = data_dir()
            if not home.exists():
                home.mkdir(parents=True, mode=0o700)
                home.chmod(0o700)  # mkdir's mode is masked by the umask
            path = home / DB_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        path.chmod(0o600)  # SQLite gives its -wal and -shm files the database file's mode
        db = Database(sqlite3.connect(path, check_same_thread=False))
        db.enable_wal()
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("PRAGMA synchronous = NORMAL")  # durable writes ask for FULL (see the module's docstring)
        MIGRATIONS.apply(db)
        return cls(db, path)

    @classmethod
    def memory(cls) -> Store:
        """A migrated in-memory database."""
        db = Database(sqlite3.connect(":memory:", check_same_thread=False))
        MIGRATIONS.apply(db)
        return cls(db)

    def close(self) -> None:
        self.db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *_: object) -> None:
        async with self._lock:  # let a write in flight finish before the connection closes
            self.close()

    def applied_migrations(self) -> list[str]:
        return [m.name for m in MIGRATIONS.applied(self.db)]

    def watch_space(self, watcher: Callable[[StoreFull | None], None]) -> None:
        """Call ``watcher(error)`` when a write fails for lack of space after one succeeded (or
        first), and ``watcher(None)`` when a write succeeds again."""
        self._watchers.append(watcher)

    async def writable(self) -> None:
        """Return once the last write succeeded (at once unless the disk is full)."""
        while self.full is not None:
            await self._space.wait()

    def _filled(self, error: BaseException) -> StoreFull:
        where = self.path.parent if self.path is not None else "memory"
        reason = getattr(error, "strerror", None) or str(error)
        full = StoreFull(
            f"the data directory {where} is full ({reason}): the hub cannot save; free space there "
            "(agents wait meanwhile and go on by themselves)"
        )
        if self.full is None:
            log.warning("%s", full)
            self._space = anyio.Event()
            self.full = full
            for watcher in self._watchers:
                watcher(full)
        self.full = full
        return full

    def _wrote(self) -> None:
        if self.full is not None:
            log.warning("the data directory has space again: writes succeed")
            self.full = None
            self._space.set()
            for watcher in self._watchers:
                watcher(None)

    async def call(self, work: Callable[[Database], T], *, offload: bool = False) -> T:
        """Run ``work(db)``, serialised with every other call; a record module that keeps its SQL
        beside this one (:mod:`dispatch.hub.store.records`) reads and writes so. ``offload``: in a
        worker thread, for a read that may scan a long history (see the module's docstring)."""
        return await self._run(lambda: work(self.db), offload=offload)

    async def transaction(self, work: Callable[[Database], T], *, durable: bool = True) -> T:
        """Run ``work(db)`` in one transaction; returns its result once committed, and, when
        ``durable``, once the commit is on the disk (not only past a crash of the hub)."""
        return await self._run(lambda: self._in_transaction(work, durable))

    def _in_transaction(self, work: Callable[[Database], T], durable: bool) -> T:
        if durable:
            self.db.execute("PRAGMA synchronous = FULL")
        try:
            with self.db.atomic():
                result = work(self.db)
        except (sqlite3.Error, OSError) as error:
            if no_space(error):
                raise self._filled(error) from None
            raise
        finally:
            if durable:
                self.db.execute("PRAGMA synchronous = NORMAL")
        self._wrote()
        return result

    async def sync_log(self) -> None:
        """Put every commit so far on the disk (they survive a power loss from now on)."""
        if self.path is not None:  # an in-memory database has no disk to reach
            await self._run(functools.partial(_sync_file, self.path.with_name(self.path.name + "-wal")))

    async def _run(self, work: Callable[[], T], *, offload: bool = False) -> T:
        async with self._lock:
            if offload:
                return await anyio.to_thread.run_sync(work)
            return work()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.db.execute(sql, list(params))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # ---- the usage ledger ----------------------------------------------------------------------

    async def record_usage(self, row: UsageRow) -> None:
        """Append one call to the ledger in a transaction of its own; returns once committed. While
        the disk is full it waits, trying again now and then: the call was made, so its row must be
        kept. (A hub writes its rows with the journal's batches instead: :class:`JournaledLedger`.)"""
        delay, longest = FULL_RETRY_S
        while True:
            try:
                return await self.transaction(insert_usage(row), durable=False)  # the ledger is the hub's own record
            except StoreFull:
                with anyio.move_on_after(delay):
                    await self.writable()
                delay = min(delay * 2, longest)

    async def spend(self, key: str, since: float = 0.0) -> float:
        """What ``key`` has cost since ``since`` (POSIX seconds)."""
        sql = "select coalesce(sum(cost_usd), 0) as spent from usage where key = ? and at >= ?"
        rows = await self._run(lambda: self._rows(sql, (key, since)))
        return float(rows[0]["spent"])

    async def usage_total(self, *, agent_ids: Sequence[str] | None = None, since: float = 0.0) -> Usage:
        """Totals over the ledger, or over the given agents (a subtree: the agent and its descendants)."""
        where, params = self._where(agent_ids, since)
        rows = await self._run(lambda: self._rows(f"select {_TOTALS} from usage {where}", params), offload=True)
        return _usage(rows[0])

    async def usage_by(
        self, group: UsageGroup, *, agent_ids: Sequence[str] | None = None, since: float = 0.0
    ) -> dict[str, Usage]:
        """Totals per agent, key, model or UTC day (``YYYY-MM-DD``), optionally for some agents."""
        column = _GROUP_SQL[group]
        where, params = self._where(agent_ids, since)
        sql = f"select {column} as name, {_TOTALS} from usage {where} group by name order by name"
        rows = await self._run(lambda: self._rows(sql, params), offload=True)
        return {str(r["name"]): _usage(r) for r in rows}

    async def usage_rows(self, *, agent_ids: Sequence[str] | None = None, since: float = 0.0) -> list[UsageRow]:
        """The ledger rows themselves, oldest first."""
        where, params = self._where(agent_ids, since)
        rows = await self._run(lambda: self._rows(f"select * from usage {where} order by id", params), offload=True)
        return [UsageRow(**{k: v for k, v in r.items() if k != "id"}) for r in rows]

    @staticmethod
    def _where(agent_ids: Sequence[str] | None, since: float) -> tuple[str, list[Any]]:
        clauses: list[str] = ["at >= ?"]
        params: list[Any] = [since]
        if agent_ids is not None:
            clauses.append(f"agent_id in ({', '.join('?' for _ in agent_ids) or 'null'})")
            params.extend(agent_ids)
        return "where " + " and ".join(clauses), params

    # ---- chats, approvals and agent threads (m100-m102; dispatch.hub.service.chats, .approvals, .threads) ---

    async def _one(self, sql: str, params: Sequence[Any]) -> Row | None:
        rows = await self._run(lambda: self._rows(sql, params))
        return rows[0] if rows else None

    async def add_chat(self, row: Row) -> None:
        await self.transaction(lambda db: db.table("chats").insert(row))

    async def chat_row(self, chat_id: str) -> Row | None:
        return await self._one("select * from chats where id = ?", (chat_id,))

    async def update_chat(self, chat_id: str, fields: Row) -> None:
        await self.transaction(lambda db: db.table("chats").update(chat_id, fields))

    async def add_chat_message(self, row: Row, chat_fields: Row) -> None:
        """Insert a message and update its chat (``head_id``, ``updated_at``, ...) in one transaction."""

        def work(db: Database) -> None:
            db.table("chat_messages").insert(row)
            db.table("chats").update(row["chat_id"], chat_fields)

        await self.transaction(work)

    async def chat_history(self, head_id: str) -> list[Row]:
        """The messages from the first to ``head_id``, following parent links (a fork's shared history too)."""
        sql = (
            "with recursive chain(id, depth) as (select ?, 0 union all select m.parent_id, chain.depth + 1 "
            "from chat_messages m join chain on m.id = chain.id where m.parent_id is not null) "
            "select m.* from chain join chat_messages m on m.id = chain.id order by chain.depth desc"
        )
        return await self._run(lambda: self._rows(sql, (head_id,)), offload=True)

    async def find_chats(self, words: str | None, since: float | None, until: float | None) -> list[Row]:
        """Chats, newest first: updated in ``[since, until)`` (POSIX seconds, either may be None), and
        with ``words`` (FTS5, quoted here) in the title or in any message of their history."""
        clauses, params = (
            ["(? is null or updated_at >= ?)", "(? is null or updated_at < ?)"],
            [since, since, until, until],
        )
        prefix = ""
        if words is not None:
            prefix = (
                "with recursive chain(chat_id, id) as (select id, head_id from chats where head_id is not null "
                "union all select chain.chat_id, m.parent_id from chat_messages m join chain on m.id = chain.id "
                "where m.parent_id is not null) "
            )
            clauses.append(
                "(rowid in (select rowid from chats_fts where chats_fts match ?) or id in (select chain.chat_id "
                "from chain join chat_messages m on m.id = chain.id where m.rowid in "
                "(select rowid from chat_messages_fts where chat_messages_fts match ?)))"
            )
            quoted = fts_words(words)
            params += [quoted, quoted]
        sql = f"{prefix}select * from chats where {' and '.join(clauses)} order by updated_at desc, id"
        return await self._run(lambda: self._rows(sql, params), offload=True)

    async def add_approval(self, row: Row) -> None:
        await self.transaction(lambda db: db.table("approvals").insert(row))

    async def update_approval(self, approval_id: str, fields: Row) -> None:
        await self.transaction(lambda db: db.table("approvals").update(approval_id, fields))

    async def approval_row(self, approval_id: str) -> Row | None:
        return await self._one("select * from approvals where id = ?", (approval_id,))

    async def approval_rows(self, state: str | None) -> list[Row]:
        """Approvals in one state (every state for None), oldest first."""
        sql = "select * from approvals where (? is null or state = ?) order by created_at, id"
        return await self._run(lambda: self._rows(sql, (state, state)))

    async def add_thread(self, row: Row) -> None:
        """Open an agent's user thread (nothing happens when it is open already)."""
        await self.transaction(lambda db: db.table("agent_threads").insert(row, ignore=True))

    async def thread_row(self, agent_id: str) -> Row | None:
        return await self._one("select * from agent_threads where agent_id = ?", (agent_id,))

    async def thread_rows(self) -> list[Row]:
        return await self._run(lambda: self._rows("select * from agent_threads order by created_at desc"))

    async def add_thread_message(self, row: Row) -> None:
        await self.transaction(lambda db: db.table("agent_thread_messages").insert(row))

    async def thread_messages(self, agent_id: str) -> list[Row]:
        sql = "select * from agent_thread_messages where agent_id = ? order by created_at, rowid"
        return await self._run(lambda: self._rows(sql, (agent_id,)))

    # ---- outside servers' pinned tool lists (m103; dispatch.hub.mounts.pins) --------------------------

    async def tool_pin(self, server: str) -> Row | None:
        return await self._one("select * from tool_pins where server = ?", (server,))

    async def set_tool_pin(self, row: Row) -> None:
        """Pin (or re-pin) a server's tool list: a whole row, replacing the one before."""
        await self.transaction(lambda db: db.table("tool_pins").insert(row, replace=True))
