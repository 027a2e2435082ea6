"""The hub's run records: agents, transcripts, inbox messages, events and artifacts in SQLite.

With :mod:`dispatch.hub.store.db` (which owns the connection; :mod:`dispatch.hub.store.schema` made these
tables), this is the one module that speaks SQL. Writes come in two kinds:

* the journal's: :data:`Op` functions of the database, built by :mod:`dispatch.hub.store.journal` from
  each event, applied in batches, one transaction per batch (:meth:`Records.apply`);
* direct ones, acknowledged on commit: an artifact saved by an agent, a rewind of its changes.

Reads are async methods on the store's connection. :class:`Records` is also the tree's
``ArtifactShelf`` (``save`` / ``find`` / ``get``), so agents keep and search artifacts without the
tree holding any SQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlite_utils import Database

from dispatch.hub import times
from dispatch.hub.agents.spec import AgentSpec
from dispatch.hub.changes.shadow import Blob, FileChange
from dispatch.hub.events import Event, FilesChanged, stored_event
from dispatch.hub.ids import new_id
from dispatch.hub.store.db import Store
from dispatch.servers.hublink import ArtifactInfo, InboxMessage, MessageKind

Op = Callable[[Database], None]
"""One write of a journal batch; runs inside the batch's transaction."""

AGENT_COLUMNS = (
    *("id", "parent_id", "chat_id", "root", "name", "template", "task", "model", "spec", "state", "reason"),
    *("waiting_until", "question", "report", "error", "tokens_in", "tokens_out", "cost_usd", "steps", "progress"),
    *("created_at", "updated_at", "cache_read_tokens", "cache_write_tokens", "compaction", "compactions"),
    "placement",
)


@dataclass(frozen=True)
class AgentRow:
    """An agent as the store keeps it."""

    id: str
    parent_id: str | None
    chat_id: str | None
    root: str | None
    spec: AgentSpec
    state: str
    reason: str
    waiting_until: str | None
    question: str | None
    report: str | None
    error: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    steps: int
    progress: list[str]
    created_at: float
    updated_at: float
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    compaction: str | None = None
    """The agent's last compaction record, as JSON (None: it never compacted)."""
    compactions: int = 0
    placement: str | None = None
    """Where its tool servers last ran, as the JSON of a ``PlacementView`` (None: never on a tool host)."""


def _agent_row(raw: dict[str, Any]) -> AgentRow:
    spec = AgentSpec.model_validate_json(raw["spec"])
    if raw["model"] and raw["model"] != spec.model:  # switched while the agent was not running
        spec = spec.model_copy(update={"model": raw["model"]})
    if spec.root is None and raw["root"]:  # stored before specs named their project
        spec = spec.model_copy(update={"root": raw["root"]})
    return AgentRow(
        id=raw["id"],
        parent_id=raw["parent_id"],
        chat_id=raw["chat_id"],
        root=raw["root"],
        spec=spec,
        state=raw["state"],
        reason=raw["reason"] or "",
        waiting_until=times.iso(raw["waiting_until"]) if raw["waiting_until"] is not None else None,
        question=raw["question"],
        report=raw["report"],
        error=raw["error"],
        tokens_in=int(raw["tokens_in"] or 0),
        tokens_out=int(raw["tokens_out"] or 0),
        cost_usd=float(raw["cost_usd"] or 0.0),
        steps=int(raw["steps"] or 0),
        progress=list(json.loads(raw["progress"] or "[]")),
        created_at=float(raw["created_at"]),
        updated_at=float(raw["updated_at"] or raw["created_at"]),
        cache_read_tokens=int(raw["cache_read_tokens"] or 0),
        cache_write_tokens=int(raw["cache_write_tokens"] or 0),
        compaction=raw.get("compaction"),
        compactions=int(raw.get("compactions") or 0),
        placement=raw.get("placement"),
    )


def _rows(db: Database, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cursor = db.execute(sql, list(params))
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _event(raw: dict[str, Any]) -> Event:
    return stored_event(raw["id"], raw["at"], raw["type"], raw["agent_id"], json.loads(raw["data"]))


def fts_query(text: str, *, any_word: bool = False) -> str | None:
    """The words of ``text`` as an FTS5 query (each quoted, so no syntax error is possible): all of
    them, or any of them. None when ``text`` has no words."""
    words = re.findall(r"\w+", text)
    return (" OR " if any_word else " ").join(f'"{w}"' for w in words) or None


# ---- journal operations ------------------------------------------------------------------------


def _execute(sql: str, params: Sequence[Any]) -> Op:
    def op(db: Database) -> None:
        db.conn.execute(sql, list(params))

    return op


def _execute_many(sql: str, rows: Sequence[Sequence[Any]]) -> Op:
    def op(db: Database) -> None:
        db.conn.executemany(sql, rows)

    return op


def insert_events(events: Iterable[Event]) -> Op:
    rows = [(e.seq, e.at, e.type, e.agent_id, e.data_json) for e in events]  # ``data`` as on the wire
    return _execute_many("insert into events (id, at, type, agent_id, data) values (?, ?, ?, ?, ?)", rows)


def insert_agent(values: dict[str, Any]) -> Op:
    columns = [c for c in AGENT_COLUMNS if c in values]
    sql = f"insert or replace into agents ({', '.join(columns)}) values ({', '.join('?' for _ in columns)})"
    return _execute(sql, [values[c] for c in columns])


def update_agent(agent_id: str, values: dict[str, Any]) -> Op:
    unknown = set(values) - set(AGENT_COLUMNS)
    if unknown:
        raise ValueError(f"no agent columns named {sorted(unknown)}")
    sql = f"update agents set {', '.join(f'{c} = ?' for c in values)} where id = ?"
    return _execute(sql, [*values.values(), agent_id])


def append_transcript(agent_id: str, first_idx: int, step: int, messages: Sequence[str]) -> Op:
    rows = [(agent_id, first_idx + n, step, m) for n, m in enumerate(messages)]
    sql = "insert or replace into transcripts (agent_id, idx, step, message) values (?, ?, ?, ?)"
    return _execute_many(sql, rows)


def append_progress(agent_id: str, note: str, at: float) -> Op:
    sql = "update agents set progress = json_insert(coalesce(progress, '[]'), '$[#]', ?), updated_at = ? where id = ?"
    return _execute(sql, [note, at, agent_id])


def insert_message(agent_id: str, message: dict[str, Any]) -> Op:
    sql = "insert or ignore into messages (id, agent_id, kind, sender, text, sent_at) values (?, ?, ?, ?, ?, ?)"
    return _execute(
        sql, [message["id"], agent_id, message["kind"], message["sender"], message["text"], message["sent_at"]]
    )


def mark_delivered(message_id: str, step: int) -> Op:
    return _execute("update messages set delivered_step = ? where id = ?", [step, message_id])


def insert_file_changes(agent_id: str, at: float, changed: FilesChanged) -> Op:
    rows = [(agent_id, at, changed.before, changed.after, f.path, f.before, f.after) for f in changed.files]
    sql = (
        "insert into file_changes (agent_id, at, before_tree, after_tree, path, before, after) "
        "values (?, ?, ?, ?, ?, ?, ?)"
    )
    return _execute_many(sql, rows)


def parse_blob(state: str | None) -> Blob | None:
    """A file's state as the store keeps it, read back."""
    if not state:
        return None
    mode, sha = state.split(" ", 1)
    return Blob(mode, sha)


def blob_text(blob: Blob | None) -> str | None:
    """A file's state as the store keeps it: ``MODE SHA`` (None: absent)."""
    return None if blob is None else f"{blob.mode} {blob.sha}"


# ---- the records ---------------------------------------------------------------------------------


class Records:
    """Reads and writes of the run tables, on one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def apply(self, ops: Sequence[Op], *, durable: bool) -> None:
        """Run a batch of journal operations in one transaction; returns once committed (and on
        the disk, when ``durable``)."""

        def work(db: Database) -> None:
            for op in ops:
                op(db)

        await self.store.transaction(work, durable=durable)

    async def sync_log(self) -> None:
        """Put every commit so far on the disk."""
        await self.store.sync_log()

    # ---- agents, transcripts, messages ---------------------------------------------------------

    async def agent_rows(self, where: str = "", params: Sequence[Any] = (), *, offload: bool = True) -> list[AgentRow]:
        """Stored agents, oldest first (all of them by default: a long history, read in a worker thread)."""
        sql = f"select * from agents {where} order by created_at, rowid"
        return [_agent_row(r) for r in await self.store.call(lambda db: _rows(db, sql, params), offload=offload)]

    async def agent_row(self, agent_id: str) -> AgentRow | None:
        found = await self.agent_rows("where id = ?", [agent_id], offload=False)
        return found[0] if found else None

    async def subtree(self, agent_id: str) -> list[AgentRow]:
        """The agent and its descendants, parents before children."""
        sql = (
            "with recursive below(id, depth) as (select id, 0 from agents where id = ? "
            "union all select a.id, below.depth + 1 from agents a join below on a.parent_id = below.id) "
            "select agents.* from agents join below using (id) order by below.depth, agents.created_at, agents.rowid"
        )
        return [_agent_row(r) for r in await self.store.call(lambda db: _rows(db, sql, [agent_id]), offload=True)]

    async def unfinished(self) -> list[AgentRow]:
        """Agents a hub left running (or pending, or waiting): not finished, not yet interrupted."""
        return await self.agent_rows("where state not in ('done', 'failed', 'cancelled', 'interrupted')")

    async def transcript(self, agent_id: str) -> list[dict[str, Any]]:
        sql = "select message from transcripts where agent_id = ? order by idx"
        rows = await self.store.call(lambda db: _rows(db, sql, [agent_id]), offload=True)
        return [json.loads(r["message"]) for r in rows]

    async def unread_messages(self, agent_id: str, steps: int) -> list[InboxMessage]:
        """Messages the agent had not read by its last persisted step ``steps``, oldest first."""
        sql = (
            "select * from messages where agent_id = ? and (delivered_step is null or delivered_step > ?) "
            "order by sent_at, rowid"
        )
        rows = await self.store.call(lambda db: _rows(db, sql, [agent_id, steps]))
        return [
            InboxMessage(
                id=r["id"],
                kind=MessageKind(r["kind"]),
                text=r["text"],
                sender=r["sender"],
                sent_at=datetime.fromtimestamp(r["sent_at"], UTC),
            )
            for r in rows
        ]

    # ---- changes to files (the tree's ChangeLog) -----------------------------------------------

    async def file_change_rows(self, agent_ids: Sequence[str]) -> list[tuple[int, FileChange]]:
        """The agents' changes no rewind undid, oldest first, each with its row id."""
        marks = ", ".join("?" for _ in agent_ids) or "null"
        sql = f"select * from file_changes where agent_id in ({marks}) and reverted_by is null order by id"
        rows = await self.store.call(lambda db: _rows(db, sql, list(agent_ids)), offload=True)
        return [(r["id"], FileChange(r["path"], parse_blob(r["before"]), parse_blob(r["after"]))) for r in rows]

    async def file_changes(self, agent_ids: Sequence[str]) -> list[FileChange]:
        return [change for _, change in await self.file_change_rows(agent_ids)]

    async def add_rewind(self, rewind_id: str, agent_id: str, root: str, files: str, change_ids: Sequence[int]) -> None:
        """Keep a rewind (``files``: JSON) and mark the changes it put back; returns once committed."""

        def write(db: Database) -> None:
            db.table("rewinds").insert(
                {"id": rewind_id, "agent_id": agent_id, "at": times.now(), "root": root, "files": files}
            )
            db.conn.executemany(
                "update file_changes set reverted_by = ? where id = ?", [(rewind_id, i) for i in change_ids]
            )

        await self.store.transaction(write)

    async def last_rewind(self, agent_id: str) -> dict[str, Any] | None:
        """The agent's latest rewind not undone yet."""
        sql = "select * from rewinds where agent_id = ? and undone_at is null order by at desc, rowid desc limit 1"
        rows = await self.store.call(lambda db: _rows(db, sql, [agent_id]))
        return rows[0] if rows else None

    async def undo_rewind(self, rewind_id: str) -> None:
        """Mark the rewind undone: the changes it put back count again."""

        def write(db: Database) -> None:
            db.conn.execute("update rewinds set undone_at = ? where id = ?", [times.now(), rewind_id])
            db.conn.execute("update file_changes set reverted_by = null where reverted_by = ?", [rewind_id])

        await self.store.transaction(write)

    # ---- events --------------------------------------------------------------------------------

    async def last_event_id(self) -> int:
        rows = await self.store.call(lambda db: _rows(db, "select coalesce(max(id), 0) as last from events"))
        return int(rows[0]["last"])

    async def events_after(
        self, since: int, *, limit: int = 500, agent_ids: Sequence[str] | None = None
    ) -> list[Event]:
        """Events with ``seq > since``, oldest first, at most ``limit``; optionally of some agents."""
        where, params = "where id > ?", list[Any]([since])
        if agent_ids is not None:
            where += f" and agent_id in ({', '.join('?' for _ in agent_ids) or 'null'})"
            params.extend(agent_ids)
        sql = f"select * from events {where} order by id limit {int(limit)}"
        return [_event(r) for r in await self.store.call(lambda db: _rows(db, sql, params))]

    # ---- artifacts (the tree's ArtifactShelf) --------------------------------------------------

    async def save(self, agent_id: str | None, kind: str, title: str, content: str) -> ArtifactInfo:
        """Keep an artifact; returns it once committed."""
        at = times.now()
        saved = ArtifactInfo(
            id=new_id("art"), kind=kind, title=title, agent_id=agent_id, created_at=times.iso(at), content=content
        )

        def write(db: Database) -> None:
            db.conn.execute(
                "insert into artifacts (id, kind, title, content, agent_id, created_at) values (?, ?, ?, ?, ?, ?)",
                [saved.id, kind, title, content, agent_id, at],
            )

        await self.store.transaction(write)
        return saved.model_copy(update={"excerpt": content[:200]})

    async def find(self, query: str | None, kind: str | None, limit: int) -> list[ArtifactInfo]:
        """Best matches for all the words of ``query`` (or, when none has all, any of them), of
        ``kind`` when given; without a query, the newest."""
        if query is None or fts_query(query) is None:
            where, params = ("where kind = ?", [kind]) if kind else ("", [])
            sql = (
                f"select id, kind, title, agent_id, created_at, substr(content, 1, 200) as excerpt "
                f"from artifacts {where} order by created_at desc, rowid desc limit {int(limit)}"
            )
            rows = await self.store.call(lambda db: _rows(db, sql, params))
        else:
            rows = await self._search(fts_query(query) or "", kind, limit)
            if not rows:
                rows = await self._search(fts_query(query, any_word=True) or "", kind, limit)
        return [_artifact(r) for r in rows]

    async def _search(self, match: str, kind: str | None, limit: int) -> list[dict[str, Any]]:
        sql = (
            "select a.id, a.kind, a.title, a.agent_id, a.created_at, "
            "snippet(artifacts_fts, 1, '[', ']', '…', 16) as excerpt "
            "from artifacts a join artifacts_fts on a.rowid = artifacts_fts.rowid "
            f"where artifacts_fts match ? {'and a.kind = ?' if kind else ''} "
            f"order by artifacts_fts.rank limit {int(limit)}"
        )
        params = [match, kind] if kind else [match]
        return await self.store.call(lambda db: _rows(db, sql, params))

    async def get(self, artifact_id: str) -> ArtifactInfo | None:
        sql = "select id, kind, title, agent_id, created_at, content from artifacts where id = ?"
        rows = await self.store.call(lambda db: _rows(db, sql, [artifact_id]))
        return _artifact({**rows[0], "excerpt": rows[0]["content"][:200]}) if rows else None


def _artifact(row: dict[str, Any]) -> ArtifactInfo:
    return ArtifactInfo(**{**row, "created_at": times.iso(row["created_at"])})
