"""The database's schema: numbered migration functions (``m001_usage``, ``m002_...``) registered
on :data:`MIGRATIONS` and recorded in the ``_migrations`` table as they are applied, each in its own
transaction (sqlite-utils' ``Migrations``, as simonw/llm does it). :meth:`Store.open
<dispatch.hub.store.db.Store.open>` applies them. To add tables: write the next ``mNNN_`` function
below, decorated with ``@MIGRATIONS()``, and give the store (or :mod:`dispatch.hub.store.records`)
the methods that read and write them. Never edit an applied migration; add the next.

Tables (m001): ``usage``, the ledger of model calls: ``at`` (POSIX seconds), ``agent_id``, ``key``
(the config's key name, or ``env:PROVIDER`` for litellm's environment), ``provider``, ``model``
(the litellm model called), ``requested`` (the tag or name the agent asked for), ``tokens_in``,
``tokens_out``, ``cost_usd``, ``latency_s``, ``outcome`` (``ok``, or the failure kind) and ``error``.

Tables of the hub's runs (m002-m006; their reads and writes are in
:mod:`dispatch.hub.store.records`): ``agents`` (one row per agent: its spec as JSON, state, reason,
usage, steps persisted, report, error, progress notes), ``transcripts`` (every message of every
agent, ``(agent_id, idx)``, with the step that added it), ``messages`` (everything put in an
agent's inbox, and the step that read it), ``events`` (the event log; ``id`` is the event's
``seq``, monotonic across restarts) and ``artifacts`` (plans and findings agents saved;
``artifacts_fts`` indexes title and content, kept current by triggers).

Tables of chats, approvals and detached agents' user threads (m100-m102): ``chats`` (``head_id``,
its last message; ``forked_from`` ``CHAT:MESSAGE``; ``agent_id``, its latest dispatch agent;
``chats_fts`` indexes the title), ``chat_messages`` (``parent_id`` links each to the one before, so
a fork shares its history; ``chat_messages_fts`` indexes the text), ``approvals`` (path prompts and
checkpoints: ``chain`` a JSON list of names, ``state`` pending / approved / denied, ``decided_by``
"the user" / "auto_approve" / "the hub", ``remember``), ``agent_threads`` and ``agent_thread_messages`` (a
detached agent's questions, role ``agent``, and the user's answers, role ``user``).

Table of outside MCP servers (m103): ``tool_pins``, one row per server name: the ``hash`` of the
tool list the user trusts, that list itself (``tools``, JSON: name, description, input schema),
``pinned_at``, and ``approval_id`` (the approval of a change; null when pinned on first use).

Times (m104): every time column holds POSIX seconds (REAL); the views show them as ISO strings
(:mod:`dispatch.hub.times`). Before m104 the tables of m004, m006 and m100-m103 kept ISO strings.

Projects (m105): ``chats.root``, the project a chat's agents work in (NULL: the hub's own).

Prompt caching (m106): ``cache_read_tokens`` and ``cache_write_tokens`` on ``usage`` and
``agents``, the part of ``tokens_in`` read from and written to the provider's prompt cache.

Compaction (m107): ``agents.compaction``, the agent's last compaction record as JSON (what it
sends in place of its whole transcript, which ``transcripts`` keeps whole), and
``agents.compactions``, how many times it compacted.

Caps (m108): ``chats.budget_usd``, ``chats.max_tokens``, ``chats.max_steps``, the caps of each
dispatch agent the chat starts (NULL: its template's).

Changes to files (m109; :mod:`dispatch.hub.changes`): ``file_changes``, one row per file per
window of an agent's writing tool calls: ``before_tree`` and ``after_tree`` (the snapshots of its
scope, tree ids in the project's change store), ``path``, ``before`` and ``after`` (``MODE SHA``,
NULL: absent) and ``reverted_by`` (the rewind that put it back, NULL: none); ``rewinds``, one row per
rewind: the agent, ``files`` (JSON: path, ``before`` the state it found, ``after`` the state it
restored) and ``undone_at``.

Approval diffs (m110): ``approvals.diff``, the unified diff a checkpoint about changing files
holds (a proposed fs write; NULL: none).

Chat models (m111): ``chats.model``, the model (tag or litellm name) of each dispatch agent the
chat starts (NULL: the hub's default, as before).

Placements (m112): ``agents.placement``, where the agent's tool servers last ran
(``execution.engine: ray``), as JSON: ``engine``, ``node_id``, ``address``, ``files`` (NULL: in
the hub's process, or never placed).
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from dispatch.hub import times


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


@MIGRATIONS()
def m002_agents(db: Database) -> None:
    db.table("agents").create(
        {
            "id": str,
            "parent_id": str,
            "chat_id": str,
            "root": str,
            "name": str,
            "template": str,
            "task": str,
            "model": str,
            "spec": str,
            "state": str,
            "reason": str,
            "waiting_until": str,
            "question": str,
            "report": str,
            "error": str,
            "tokens_in": int,
            "tokens_out": int,
            "cost_usd": float,
            "steps": int,
            "progress": str,
            "created_at": float,
            "updated_at": float,
        },
        pk="id",
        not_null={"name", "task", "model", "spec", "state", "created_at"},
        defaults={"reason": "", "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, "steps": 0, "progress": "[]"},
    )
    db.table("agents").create_index(["parent_id"])
    db.table("agents").create_index(["state"])


@MIGRATIONS()
def m003_transcripts(db: Database) -> None:
    db.table("transcripts").create(
        {"agent_id": str, "idx": int, "step": int, "message": str},
        pk=("agent_id", "idx"),
        not_null={"message"},
    )


@MIGRATIONS()
def m004_messages(db: Database) -> None:
    db.table("messages").create(
        {"id": str, "agent_id": str, "kind": str, "sender": str, "text": str, "sent_at": str, "delivered_step": int},
        pk="id",
        not_null={"agent_id", "kind", "sender", "text", "sent_at"},
    )
    db.table("messages").create_index(["agent_id"])


@MIGRATIONS()
def m005_events(db: Database) -> None:
    db.table("events").create(
        {"id": int, "at": float, "type": str, "agent_id": str, "data": str},
        pk="id",
        not_null={"at", "type", "data"},
    )
    db.table("events").create_index(["agent_id", "id"])


@MIGRATIONS()
def m006_artifacts(db: Database) -> None:
    db.table("artifacts").create(
        {"id": str, "kind": str, "title": str, "content": str, "agent_id": str, "created_at": str},
        pk="id",
        not_null={"kind", "title", "content", "created_at"},
    )
    db.table("artifacts").create_index(["kind", "created_at"])
    db.table("artifacts").enable_fts(["title", "content"], create_triggers=True)


@MIGRATIONS()
def m100_chats(db: Database) -> None:
    db.table("chats").create(
        {
            "id": str,
            "title": str,
            "created_at": str,
            "updated_at": str,
            "forked_from": str,
            "head_id": str,
            "agent_id": str,
        },
        pk="id",
        not_null={"title", "created_at", "updated_at"},
        defaults={"title": ""},
    )
    db.table("chats").create_index(["updated_at"])
    db.table("chats").enable_fts(["title"], create_triggers=True)
    db.table("chat_messages").create(
        {"id": str, "chat_id": str, "parent_id": str, "role": str, "text": str, "agent_id": str, "created_at": str},
        pk="id",
        not_null={"chat_id", "role", "text", "created_at"},
    )
    db.table("chat_messages").create_index(["parent_id"])
    db.table("chat_messages").create_index(["chat_id"])
    db.table("chat_messages").enable_fts(["text"], create_triggers=True)


@MIGRATIONS()
def m101_approvals(db: Database) -> None:
    db.table("approvals").create(
        {
            "id": str,
            "kind": str,
            "agent_id": str,
            "chain": str,
            "path": str,
            "operation": str,
            "checkpoint": str,
            "content": str,
            "created_at": str,
            "auto_approve_at": str,
            "state": str,
            "decided_at": str,
            "decided_by": str,
            "remember": str,
            "reason": str,
        },
        pk="id",
        not_null={"kind", "agent_id", "chain", "created_at", "state"},
        defaults={"state": "pending"},
    )
    db.table("approvals").create_index(["state", "created_at"])


@MIGRATIONS()
def m102_agent_threads(db: Database) -> None:
    db.table("agent_threads").create(
        {"agent_id": str, "name": str, "parent_id": str, "task": str, "created_at": str},
        pk="agent_id",
        not_null={"name", "task", "created_at"},
    )
    db.table("agent_thread_messages").create(
        {"id": str, "agent_id": str, "role": str, "text": str, "message_id": str, "created_at": str},
        pk="id",
        not_null={"agent_id", "role", "text", "created_at"},
    )
    db.table("agent_thread_messages").create_index(["agent_id", "created_at"])


@MIGRATIONS()
def m103_tool_pins(db: Database) -> None:
    db.table("tool_pins").create(
        {"server": str, "hash": str, "tools": str, "pinned_at": str, "approval_id": str},
        pk="server",
        not_null={"hash", "tools", "pinned_at"},
    )
    db.table("approvals").add_column("server", str)  # a tool_change approval's server


_ISO_TIMES = {
    "agents": ("waiting_until",),
    "messages": ("sent_at",),
    "artifacts": ("created_at",),
    "chats": ("created_at", "updated_at"),
    "chat_messages": ("created_at",),
    "approvals": ("created_at", "auto_approve_at", "decided_at"),
    "agent_threads": ("created_at",),
    "agent_thread_messages": ("created_at",),
    "tool_pins": ("pinned_at",),
}
"""The columns m001-m103 kept as ISO strings (at three precisions), by table."""


@MIGRATIONS()
def m104_times_in_seconds(db: Database) -> None:
    """Every time in POSIX seconds, as the hot tables (usage, agents, events) always kept them: the
    ISO columns become REAL, their values converted (a time without an offset was written as UTC)."""
    for name, columns in _ISO_TIMES.items():
        table = db.table(name)
        found = db.execute("select sql from sqlite_master where type = 'trigger' and tbl_name = ?", [name])
        triggers: list[str] = [row[0] for row in found.fetchall()]  # the FTS triggers: transform drops them
        table.transform(types=dict.fromkeys(columns, float))
        for sql in triggers:
            db.execute(sql)
        if table.detect_fts():
            table.rebuild_fts()
        picked = ", ".join(columns)
        for rowid, *values in db.execute(f"select rowid, {picked} from [{name}]").fetchall():
            converted = [times.seconds(v) if isinstance(v, str) else v for v in values]
            if converted != values:
                sets = ", ".join(f"{column} = ?" for column in columns)
                db.execute(f"update [{name}] set {sets} where rowid = ?", [*converted, rowid])


@MIGRATIONS()
def m105_chat_roots(db: Database) -> None:
    """A chat keeps the project root its agents work in (NULL: the hub's own, as before)."""
    db.table("chats").add_column("root", str)


@MIGRATIONS()
def m106_cache_tokens(db: Database) -> None:
    """The prompt-cache tokens of each call in the ledger and of each agent: how many of its
    prompt tokens were read from and written to the provider's cache (0 before m106)."""
    for name in ("usage", "agents"):
        for column in ("cache_read_tokens", "cache_write_tokens"):
            db.table(name).add_column(column, int, not_null_default=0)


@MIGRATIONS()
def m107_compactions(db: Database) -> None:
    """An agent keeps its last compaction (what it sends in place of its whole transcript, as JSON)
    and how many times it compacted."""
    db.table("agents").add_column("compaction", str)
    db.table("agents").add_column("compactions", int, not_null_default=0)


@MIGRATIONS()
def m108_chat_caps(db: Database) -> None:
    """A chat keeps the caps of the dispatch agents it starts (NULL: the template's, as before)."""
    chats = db.table("chats")
    chats.add_column("budget_usd", float)
    chats.add_column("max_tokens", int)
    chats.add_column("max_steps", int)


@MIGRATIONS()
def m109_file_changes(db: Database) -> None:
    """What each agent's writing tool calls changed, and the rewinds that put it back."""
    db.table("file_changes").create(
        {
            "id": int,
            "agent_id": str,
            "at": float,
            "before_tree": str,
            "after_tree": str,
            "path": str,
            "before": str,
            "after": str,
            "reverted_by": str,
        },
        pk="id",
    )
    db.table("file_changes").create_index(["agent_id"])
    db.table("rewinds").create(
        {"id": str, "agent_id": str, "at": float, "root": str, "files": str, "undone_at": float}, pk="id"
    )
    db.table("rewinds").create_index(["agent_id"])


@MIGRATIONS()
def m110_approval_diffs(db: Database) -> None:
    """A checkpoint about changing files keeps the unified diff of the change it holds."""
    db.table("approvals").add_column("diff", str)


@MIGRATIONS()
def m111_chat_model(db: Database) -> None:
    """A chat keeps the model of the dispatch agents it starts (NULL: the hub's default, as before)."""
    db.table("chats").add_column("model", str)


@MIGRATIONS()
def m112_agent_placement(db: Database) -> None:
    """An agent keeps where its tool servers last ran (NULL: in the hub's process, as before)."""
    db.table("agents").add_column("placement", str)
