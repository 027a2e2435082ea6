"""The database: the one module that speaks SQL (SQLite through sqlite-utils, WAL).

The file is ``dispatch.db`` in the data directory (``$DISPATCH_HOME``, default
``~/.local/share/dispatch``; the directory is created 0700, the file 0600). The schema grows by
numbered migration functions (``m001_usage``, ``m002_...``) registered on :data:`MIGRATIONS` and
recorded in the ``_migrations`` table as they are applied, each in its own transaction (sqlite-utils'
``Migrations``, as simonw/llm does it). To add tables: write the next ``mNNN_`` function below,
decorated with ``@MIGRATIONS()``, and give :class:`Store` the methods that read and write them.

:class:`Store` does every read and write. Calls are async: each runs in a worker thread on the
one connection, serialised by an ``anyio.Lock``; a write returns only after its commit.

Tables (m001): ``usage``, the ledger of model calls: ``at`` (POSIX seconds), ``agent_id``, ``key``
(the config's key name, or ``env:PROVIDER`` for litellm's environment), ``provider``, ``model``
(the litellm model called), ``requested`` (the tag or name the agent asked for), ``tokens_in``,
``tokens_out``, ``cost_usd``, ``latency_s``, ``outcome`` (``ok``, or the failure kind) and ``error``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from dispatch.hub.llm.client import Usage

T = TypeVar("T")
DB_NAME = "dispatch.db"
UsageGroup = Literal["agent", "key", "model", "day"]
_GROUP_SQL: dict[UsageGroup, str] = {
    "agent": "agent_id",
    "key": "key",
    "model": "model",
    "day": "date(at, 'unixepoch')",
}


class _Migrations(Migrations):
    migrations_table = "_migrations"


MIGRATIONS = _Migrations("dispatch")
"""Every schema change, in order. Never edit an applied one; add the next."""


@MIGRATIONS()
def m001_usage(db: Database) -> None:
    db.table("usage").create(
        {
            "id": int,
            "at": float,
            "agent_id": str,
            "key": str,
            "provider": str,
            "model": str,
            "requested": str,
            "tokens_in": int,
            "tokens_out": int,
            "cost_usd": float,
            "latency_s": float,
            "outcome": str,
            "error": str,
        },
        pk="id",
        not_null={"at", "key", "model", "tokens_in", "tokens_out", "cost_usd", "outcome"},
        defaults={"tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, "outcome": "ok"},
    )
    db.table("usage").create_index(["key", "at"])
    db.table("usage").create_index(["agent_id"])
    db.table("usage").create_index(["at"])


def data_dir() -> Path:
    """``$DISPATCH_HOME``, or ``~/.local/share/dispatch``."""
    configured = os.environ.get("DISPATCH_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".local" / "share" / "dispatch"


@dataclass(frozen=True)
class UsageRow:
    """One model call (or failed attempt) for the ledger."""

    at: float
    agent_id: str | None
    key: str
    provider: str
    model: str
    requested: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    outcome: str = "ok"
    error: str | None = None


def _usage(row: dict[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=int(row["tokens_in"] or 0),
        completion_tokens=int(row["tokens_out"] or 0),
        cost_usd=float(row["cost_usd"] or 0.0),
        calls=int(row["calls"] or 0),
    )


_TOTALS = (
    "coalesce(sum(tokens_in), 0) as tokens_in, coalesce(sum(tokens_out), 0) as tokens_out, "
    "coalesce(sum(cost_usd), 0) as cost_usd, coalesce(sum(outcome = 'ok'), 0) as calls"
)


class Store:
    """The database of one hub. Open with :meth:`open` (or :meth:`memory` in tests); close at exit."""

    def __init__(self, db: Database, path: Path | None = None) -> None:
        self.db = db
        self.path = path
        self._lock = anyio.Lock()

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

    async def _run(self, work: Callable[[], T]) -> T:
        async with self._lock:
            return await anyio.to_thread.run_sync(work)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.db.execute(sql, list(params))
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # ---- the usage ledger ----------------------------------------------------------------------

    async def record_usage(self, row: UsageRow) -> int:
        """Append one call to the ledger; returns its id once committed."""

        def write() -> int:
            with self.db.atomic():
                table = self.db.table("usage").insert(asdict(row))
            return int(table.last_pk or 0)

        return await self._run(write)

    async def spend(self, key: str, since: float = 0.0) -> float:
        """What ``key`` has cost since ``since`` (POSIX seconds)."""
        sql = "select coalesce(sum(cost_usd), 0) as spent from usage where key = ? and at >= ?"
        rows = await self._run(lambda: self._rows(sql, (key, since)))
        return float(rows[0]["spent"])

    async def usage_total(self, *, agent_ids: Sequence[str] | None = None, since: float = 0.0) -> Usage:
        """Totals over the ledger, or over the given agents (a subtree: the agent and its descendants)."""
        where, params = self._where(agent_ids, since)
        rows = await self._run(lambda: self._rows(f"select {_TOTALS} from usage {where}", params))
        return _usage(rows[0])

    async def usage_by(
        self, group: UsageGroup, *, agent_ids: Sequence[str] | None = None, since: float = 0.0
    ) -> dict[str, Usage]:
        """Totals per agent, key, model or UTC day (``YYYY-MM-DD``), optionally for some agents."""
        column = _GROUP_SQL[group]
        where, params = self._where(agent_ids, since)
        sql = f"select {column} as name, {_TOTALS} from usage {where} group by name order by name"
        rows = await self._run(lambda: self._rows(sql, params))
        return {str(r["name"]): _usage(r) for r in rows}

    async def usage_rows(self, *, agent_ids: Sequence[str] | None = None, since: float = 0.0) -> list[UsageRow]:
        """The ledger rows themselves, oldest first."""
        where, params = self._where(agent_ids, since)
        rows = await self._run(lambda: self._rows(f"select * from usage {where} order by id", params))
        return [UsageRow(**{k: v for k, v in r.items() if k != "id"}) for r in rows]

    @staticmethod
    def _where(agent_ids: Sequence[str] | None, since: float) -> tuple[str, list[Any]]:
        clauses: list[str] = ["at >= ?"]
        params: list[Any] = [since]
        if agent_ids is not None:
            clauses.append(f"agent_id in ({', '.join('?' for _ in agent_ids) or 'null'})")
            params.extend(agent_ids)
        return "where " + " and ".join(clauses), params
