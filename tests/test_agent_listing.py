"""The list of every agent (``GET /api/agents``) with a long history: all of them, oldest first;
built in one go while that is quick (a request waits out no turn of a busy loop), else a slice at a
time, so that a message or an event on its way is not held while thousands of views are built.
Real SQLite on disk, the hub opened on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter

from dispatch.hub.service import hub as hub_module
from dispatch.hub.service.hub import LIST_SLICE, Hub
from dispatch.hub.store.db import DB_NAME, Store
from dispatch.hub.store.records import Records, insert_agent
from dispatch.hub.views import AgentView
from tests.agent_helpers import top_spec
from tests.hub_helpers import dirs
from tests.loop_turns import counting_turns

pytestmark = pytest.mark.anyio

STORED = 4 * LIST_SLICE - 20


async def _store_finished_agents(data: Path, count: int) -> list[str]:
    ids: list[str] = []
    async with Store.open(data / DB_NAME) as store:
        ops = []
        for n in range(count):
            spec = top_spec(f"finished task {n}")
            ids.append(spec.id)
            row = {"id": spec.id, "parent_id": None, "name": spec.name, "task": spec.task, "model": spec.model}
            row |= {"spec": spec.model_dump_json(), "state": "done", "reason": "", "report": f"report {n}"}
            row |= {"created_at": 1000.0 + n, "updated_at": 1000.0 + n, "progress": "[]"}
            ops.append(insert_agent(row))
        await Records(store).apply(ops, durable=True)
    return ids


async def test_a_long_history_is_listed_whole_and_in_order_while_the_loop_turns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "LIST_SLICE_S", 0.0)  # as if each slice took the whole allowance
    root, data = dirs(tmp_path)
    data.mkdir()
    ids = await _store_finished_agents(data, STORED)
    async with Hub.open(root, data) as hub, counting_turns() as turns:
        before = turns.count
        views = await hub.agents()
        during = turns.count - before
    assert [v.id for v in views] == ids
    assert [v.report for v in views[:2]] == ["report 0", "report 1"] and {v.state for v in views} == {"done"}
    slices = -(-STORED // LIST_SLICE)
    assert during >= slices - 1, f"the other task ran {during} times while {STORED} views were built"


async def test_a_list_of_hundreds_of_kept_views_is_answered_without_waiting_a_turn(tmp_path: Path) -> None:
    """Under load each turn of the loop is every busy agent's step: a list that let the loop turn
    per slice made its request wait them all out again and again, though it took milliseconds."""
    root, data = dirs(tmp_path)
    data.mkdir()
    ids = await _store_finished_agents(data, 600)
    async with Hub.open(root, data) as hub:
        await hub.agents_json()  # the views made and kept
        async with counting_turns() as turns:
            before = turns.count
            listed = await hub.agents_json()
            during = turns.count - before
    assert during == 0, f"the loop turned {during} times while the list of 600 kept views was built"
    assert [view.id for view in TypeAdapter(list[AgentView]).validate_json(listed)] == ids


async def test_the_listed_json_is_what_the_views_encode_to(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    data.mkdir()
    await _store_finished_agents(data, 3)
    async with Hub.open(root, data) as hub:
        encoded = TypeAdapter(list[AgentView]).dump_json(await hub.agents())
        assert await hub.agents_json() == encoded
        assert await hub.agents_json() == encoded  # the second time from what was kept
