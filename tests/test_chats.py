"""Chats: persisted on disk, forked at a message, searched by words and dates, continued by a new
dispatch agent seeded with the history, and loaded again by a later hub (history only)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from dispatch.hub.errors import NotFoundError, UserError
from dispatch.hub.llm.defaults import KEY_VARIABLES
from dispatch.hub.service.chats import ChatService
from dispatch.hub.views import ChatDetail
from tests.agent_helpers import call
from tests.chat_helpers import Parts, eventually, running_hub
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM

pytestmark = pytest.mark.anyio


async def _messages(parts: Parts, chat_id: str, count: int) -> ChatDetail:
    """The chat once it holds ``count`` messages."""
    found: list[ChatDetail] = []

    async def enough() -> bool:
        found[:] = [await parts.chats.chat(chat_id)]
        return len(found[0].messages) >= count

    await eventually(enough)
    return found[0]


def _conversation(request: RecordedRequest) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request.messages if m["role"] != "system"]


async def test_fork_at_the_third_message_shares_history_and_leaves_the_original(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    scripted_llm.script(
        "[chat-a]", [Reply(text="first answer"), Reply(text="second answer"), Reply(text="fork answer")]
    )
    async with running_hub(tmp_path / "project", tmp_path / "state" / "dispatch.db") as parts:
        chat = await parts.chats.create_chat()
        await parts.chats.post_chat_message(chat.id, "[chat-a] plan the migration")
        await _messages(parts, chat.id, 2)
        await parts.chats.post_chat_message(chat.id, "and the tests?")
        original = await _messages(parts, chat.id, 4)

        third = original.messages[2]
        fork = await parts.chats.fork_chat(chat.id, third.id)
        forked = await parts.chats.chat(fork.id)
        assert [m.id for m in forked.messages] == [m.id for m in original.messages[:3]]
        assert fork.forked_from == f"{chat.id}:{third.id}" and fork.agent_id is None
        assert fork.title == "[chat-a] plan the migration (fork)"

        await parts.chats.post_chat_message(fork.id, "try another way")
        forked = await _messages(parts, fork.id, 5)
        after = await parts.chats.chat(chat.id)
        owners = {parts.chats.chat_of(m.agent_id) for m in forked.messages if m.agent_id}

    assert after.messages == original.messages, "the original chat changed"
    assert owners == {chat.id, fork.id} and parts.chats.chat_of("a-unknown") is None
    assert [(m.role, m.text) for m in original.messages] == [
        ("user", "[chat-a] plan the migration"),
        ("assistant", "first answer"),
        ("user", "and the tests?"),
        ("assistant", "second answer"),
    ]
    assert [(m.role, m.text) for m in forked.messages[3:]] == [
        ("user", "try another way"),
        ("assistant", "fork answer"),
    ]
    assert forked.messages[3].parent_id == third.id and forked.messages[3].chat_id == fork.id
    assert forked.messages[4].agent_id is not None and forked.messages[4].agent_id != original.messages[3].agent_id
    second, in_fork = scripted_llm.requests_for("[chat-a]")[1:]
    assert _conversation(second) == [
        ("user", "[chat-a] plan the migration"),
        ("assistant", "first answer"),
        ("user", "and the tests?"),
    ], "the continuing agent's transcript is not seeded with the history"
    assert _conversation(in_fork) == [
        ("user", "[chat-a] plan the migration"),
        ("assistant", "first answer"),
        ("user", "and the tests?"),
        ("user", "try another way"),
    ]


async def test_search_by_content_and_title_and_filter_by_date(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script("[chat-s]", [Reply(text="noted")])
    async with running_hub(tmp_path / "project", tmp_path / "dispatch.db") as parts:
        groceries = await parts.chats.create_chat("Groceries")
        other = await parts.chats.create_chat("Holiday plans")
        await parts.chats.post_chat_message(groceries.id, "[chat-s] remember the quixotic cheese")
        await _messages(parts, groceries.id, 2)
        fork = await parts.chats.fork_chat(groceries.id, (await parts.chats.chat(groceries.id)).messages[0].id)

        by_content = await parts.chats.chats("quixotic")
        by_title = await parts.chats.chats("holiday")
        nothing = await parts.chats.chats("zeppelin")
        odd = await parts.chats.chats('cheese AND "NOT (')
        for words in ('say "hi', "tabs\x00spaces", '"', "NEAR(", "*", "-"):
            assert await parts.chats.chats(words) == [], words
        everything = await parts.chats.chats(since="2000-01-01", until="2999-12-31T23:59")
        none_later = await parts.chats.chats(since="2999-01-01")
        none_earlier = await parts.chats.chats(until="2000-01-01T00:00+02:00")
        with pytest.raises(UserError, match="since: expected an ISO 8601 date"):
            await parts.chats.chats(since="last tuesday")

    assert {c.id for c in by_content} == {groceries.id, fork.id}, "a fork shares its history, so it matches too"
    assert [c.id for c in by_title] == [other.id]
    assert nothing == [] and odd == [], "operators and quotes are taken as words, never as FTS syntax"
    assert {c.id for c in everything} == {groceries.id, other.id, fork.id}
    assert none_later == [] and none_earlier == []


async def test_message_to_a_running_chat_agent_goes_to_its_inbox(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    release = threading.Event()

    async def hold(request: RecordedRequest) -> Reply:
        while not release.is_set():
            await asyncio.sleep(0.01)
        return Reply(tool_calls=[call("list_dir", path=".")])

    scripted_llm.script("[chat-r]", [hold, lambda r: Reply(text=f"saw: {r.messages[-1]['content']}")])
    async with running_hub(tmp_path / "project", tmp_path / "dispatch.db") as parts:
        chat = await parts.chats.create_chat()
        await parts.chats.post_chat_message(chat.id, "[chat-r] look around")
        running = await parts.chats.chat(chat.id)
        await parts.chats.post_chat_message(chat.id, "also check the docs")
        release.set()
        done = await _messages(parts, chat.id, 3)

    assert running.agent_id is not None and done.agent_id is None
    assert len(parts.tree.agents) == 1, "a second dispatch agent was started"
    assert [m.role for m in done.messages] == ["user", "user", "assistant"]
    assert done.messages[2].text.startswith("saw: [instruction from the user · message ")
    assert done.messages[2].text.endswith("also check the docs")


async def test_a_later_hub_loads_the_history_only_and_continues_it(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script("[chat-l]", [Reply(text="hello again"), Reply(text="continued")])
    db = tmp_path / "dispatch.db"
    async with running_hub(tmp_path / "project", db) as parts:
        chat = await parts.chats.create_chat()
        await parts.chats.post_chat_message(chat.id, "[chat-l] hi")
        first_run = await _messages(parts, chat.id, 2)
    async with running_hub(tmp_path / "project", db) as parts:
        loaded = await parts.chats.chat(chat.id)
        assert parts.tree.agents == {} and loaded.agent_id is None
        await parts.chats.post_chat_message(chat.id, "go on")
        continued = await _messages(parts, chat.id, 4)

    assert loaded == first_run.model_copy(update={"agent_id": None})
    assert [m.text for m in continued.messages] == ["[chat-l] hi", "hello again", "go on", "continued"]
    assert _conversation(scripted_llm.requests_for("[chat-l]")[1]) == [
        ("user", "[chat-l] hi"),
        ("assistant", "hello again"),
        ("user", "go on"),
    ]


async def test_unknown_ids_empty_text_and_a_missing_model_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in KEY_VARIABLES.values():  # no key anywhere: no model to fall back on
        monkeypatch.delenv(variable, raising=False)
    async with running_hub(tmp_path / "project", tmp_path / "dispatch.db") as parts:
        chat = await parts.chats.create_chat("t")
        with pytest.raises(NotFoundError, match="no chat has the id 'c-nope'"):
            await parts.chats.chat("c-nope")
        with pytest.raises(NotFoundError, match="is not in the history of chat"):
            await parts.chats.fork_chat(chat.id, "cm-nope")
        with pytest.raises(UserError, match="needs some text"):
            await parts.chats.post_chat_message(chat.id, "   ")
        async with ChatService(parts.store, parts.tree) as modelless:
            with pytest.raises(UserError, match="no model for template 'dispatch': set a provider's key"):
                await modelless.post_chat_message(chat.id, "hello")
        assert (await parts.chats.chat(chat.id)).messages == [], "a refused message was kept"
