"""An agent's inbox session opens as soon as a message waits for it, so reading the message waits
for nothing but the call itself (under load every turn of the event loop is long); an agent nobody
writes to opens it on its first call, as every other in-process server. Real MCP sessions."""

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
        self._arrived = anyio.Event()

    @property
    def agent_id(self) -> str:
        return "a-reader"

    def put(self, text: str) -> None:
        message_id = f"m-{len(self.messages)}"
        now = datetime.now(UTC)
        message = InboxMessage(id=message_id, kind=MessageKind.context, sender="user", text=text, sent_at=now)
        self.messages.append(message)
        self._arrived.set()

    async def take_messages(self) -> list[InboxMessage]:
        taken, self.messages = self.messages, []
        return taken

    async def request_access(self, path: str, operation: str, why: str) -> AccessDecision:
        raise AssertionError(f"no tool here asks for access ({operation} {path}: {why})")

    async def wait_for_message(self) -> None:
        while not self.messages:
            await self._arrived.wait()
            self._arrived = anyio.Event()


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


async def test_without_mail_the_inbox_opens_on_the_first_call(tmp_path: Path) -> None:
    mailbox = _Mailbox()
    async with _mounted(tmp_path, mailbox) as (mounts, turns):
        await anyio.sleep(0.2)
        first, text = await _turns_of_check_messages(mounts, turns)
        later, _ = await _turns_of_check_messages(mounts, turns)
    assert text == "No new messages."
    assert first > later + 3, f"the first call took {first} turns, a later one {later}: was the session open already?"
