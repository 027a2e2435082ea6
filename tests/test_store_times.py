"""Times in the database are POSIX seconds; a database written before that (ISO strings at three
precisions) is migrated, and the views show the same instants as before, as ISO strings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlite_utils import Database

from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.llm.client import LiteLLMClient
from dispatch.hub.service.approvals import Approvals
from dispatch.hub.service.chats import ChatService
from dispatch.hub.store.db import Store
from dispatch.hub.store.records import Records
from dispatch.hub.store.schema import MIGRATIONS

pytestmark = pytest.mark.anyio

CHAT_CREATED = "2026-01-31T14:00:00.123456+00:00"  # the chats' and approvals' microseconds
CHAT_UPDATED = "2026-01-31T14:05:00+00:00"  # an artifact's seconds
THREAD_CREATED = "2026-01-31T17:00:00.500000+00:00"


def old_database(path: Path) -> None:
    """A database as the schema before m104 left it, with rows as that code wrote them."""
    db = Database(path)
    MIGRATIONS.apply(db, stop_before="m104_times_in_seconds")
    db.table("chats").insert(
        {"id": "c1", "title": "old chat", "created_at": CHAT_CREATED, "updated_at": CHAT_UPDATED, "head_id": "m1"}
    )
    db.table("chat_messages").insert(
        {"id": "m1", "chat_id": "c1", "role": "user", "text": "hello there", "created_at": CHAT_CREATED}
    )
    db.table("approvals").insert(
        {
            "id": "ap1",
            "kind": "path",
            "agent_id": "a1",
            "chain": json.dumps(["top"]),
            "path": "/etc/hosts",
            "operation": "read",
            "created_at": "2026-01-31T15:00:00.000001+00:00",
            "auto_approve_at": "2026-01-31T15:10:00.000001+00:00",
            "state": "pending",
        }
    )
    db.table("artifacts").insert(
        {"id": "art1", "kind": "plan", "title": "the plan", "content": "step one", "created_at": CHAT_UPDATED}
    )
    db.table("agent_threads").insert({"agent_id": "a1", "name": "helper", "task": "help", "created_at": THREAD_CREATED})
    db.table("agent_thread_messages").insert(
        {"id": "t1", "agent_id": "a1", "role": "agent", "text": "which one?", "created_at": THREAD_CREATED}
    )
    db.close()


async def test_an_old_database_is_migrated_and_its_views_show_the_same_instants(tmp_path: Path) -> None:
    path = tmp_path / "dispatch.db"
    old_database(path)

    async with Store.open(path) as store:
        tree = AgentTree(tmp_path, LiteLLMClient())
        chats = ChatService(store, tree)
        [listed] = await chats.chats(since="2026-01-31T14:05:00Z", until="2026-01-31T14:05:00.000001Z")
        detail = await chats.chat("c1")
        [found] = await chats.chats("hello")  # the full-text index survived the migration
        [approval] = await Approvals(store, tree.events, root=tree.root, agents=tree.agents).approvals()
        [artifact] = await Records(store).find("plan", None, 10)
        [thread] = await chats.threads_list()
        thread_detail = await chats.thread("a1")
        kinds = await store.call(lambda db: [row[0] for row in db.execute("select typeof(created_at) from chats")])

    assert kinds == ["real"]
    assert (listed.id, listed.created_at, listed.updated_at) == ("c1", CHAT_CREATED, "2026-01-31T14:05:00.000000+00:00")
    assert found.id == "c1"
    assert [(m.text, m.created_at) for m in detail.messages] == [("hello there", CHAT_CREATED)]
    assert approval.created_at == "2026-01-31T15:00:00.000001+00:00"
    assert approval.auto_approve_at == "2026-01-31T15:10:00.000001+00:00"
    assert (artifact.id, artifact.created_at) == ("art1", "2026-01-31T14:05:00.000000+00:00")
    assert thread.created_at == THREAD_CREATED
    assert [m.created_at for m in thread_detail.messages] == [THREAD_CREATED]
