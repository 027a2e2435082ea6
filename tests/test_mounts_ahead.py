"""An agent reads its messages (``check_messages``) without waiting for the inbox's MCP session to
open, on its first call as on any other, mail waiting or not (under load every turn of the event
loop is long, and a message often arrives during an agent's first call); the inbox's other tools
go through its session, as every other in-process server's. Real MCP sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import anyio
import anyio.lowlevel
import pytest

from dispatch.hub.mounts.connection import open_mounts
from dispatch.hub.mounts.plan import MountPlan
from dispatch.hub.mounts.toolset import Mounts
from dispatch.hub.policy.grants import Grants
from dispatch.servers.hublink import AccessDecision, HubLink, InboxMessage, MessageKind
from tests.loop_turns import LoopTurns, counting_turns

pytestmark = pytest.mark.anyio


class _Mailbox:
    """The part of a hub link the inbox server's check_messages uses (the fs server is mounted too,
    and asks for access only when a tool reaches outside the agent's scope)."""

    def __init__(self) -> None:
        self.messages: list[InboxMessage] = []
        self.progress: list[str] = []

    @property
    def agent_id(self) -> str:
        return "a-reader"

    def put(self, text: str) -> None:
        message_id = f"m-{len(self.messages)}"
        now = datetime.now(UTC)
        message = InboxMessage(id=message_id, kind=MessageKind.context, sender="user", text=text, sent_at=now)
        self.messages.append(message)

    async def report_progress(self, text: str) -> None:
        self.progress.append(text)

    async def take_messages(self) -> list[InboxMessage]:
        taken, self.messages = self.messages, []
        return taken

    async def request_access(self, path: str, operation: str, why: str) -> AccessDecision:
        raise AssertionError(f"no tool here asks for access ({operation} {path}: {why})")


@asynccontextmanager
async def _mounted(root: Path, mailbox: _Mailbox) -> AsyncIterator[tuple[Mounts, LoopTurns]]:
    async with (
        open_mounts(MountPlan(root, Grants()), cast(HubLink, mailbox)) as mounts,
        counting_turns() as turns,
    ):
        yield mounts, turns


async def _turns_of_check_messages(mounts: Mounts, turns: LoopTurns) -> tuple[int, str]:
    before = turns.count
    outcome = await mounts.call("check_messages", "{}")
    assert not outcome.is_error, outcome.text
    return turns.count - before, outcome.text


async def test_a_waiting_message_is_read_without_waiting_for_the_session_to_open(tmp_path: Path) -> None:
    mailbox = _Mailbox()
    async with _mounted(tmp_path, mailbox) as (mounts, turns):
        mailbox.put("Mind the tests.")
        await anyio.sleep(0.2)  # the agent's model call, meanwhile
        spent, text = await _turns_of_check_messages(mounts, turns)
    assert "Mind the tests." in text
    assert spent <= 3, f"reading a waiting message took {spent} turns of the loop"


async def test_the_first_check_messages_waits_for_no_session_with_mail_or_without(tmp_path: Path) -> None:
    mailbox = _Mailbox()
    async with _mounted(tmp_path, mailbox) as (mounts, turns):
        first, text = await _turns_of_check_messages(mounts, turns)
        mailbox.put("Mind the tests.")
        second, later_text = await _turns_of_check_messages(mounts, turns)
        # another of the inbox's tools opens the session on its first call, as it did
        before = turns.count
        outcome = await mounts.call("report_progress", '{"text": "half way"}')
        progress_turns = turns.count - before
    assert text == "No new messages."
    assert "Mind the tests." in later_text
    assert first <= 3 and second <= 3, f"check_messages took {first} and {second} turns of the loop"
    assert not outcome.is_error and mailbox.progress == ["half way"], outcome.text
    assert progress_turns > 3, f"report_progress took {progress_turns} turns: no session opened for it?"
