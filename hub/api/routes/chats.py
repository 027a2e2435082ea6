"""``/api/chats``: the dispatch chats: start one, list and search them, read one with its messages,
talk to its dispatch agent, fork it at any message."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BeforeValidator, Field

from dispatch.hub.api.common import Body, CapsBody, Text
from dispatch.hub.service.contract import HubService
from dispatch.hub.views import ChatDetail, ChatMessageView, ChatView

ChatId = Annotated[str, Path(description="the chat's id")]


def _iso_only(value: object) -> object:
    """Refuse what pydantic would also read as a time (a number of seconds) but is no ISO 8601 date."""
    if isinstance(value, str) and not re.match(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError(f"{value!r} is not an ISO 8601 date or time, e.g. 2026-01-31 or 2026-01-31T14:00Z")
    return value


Time = Annotated[datetime | date, BeforeValidator(_iso_only)]


def _utc(value: datetime | date | None) -> str | None:
    """A time from the query as the service takes it: ISO 8601 in UTC (a date is its midnight, UTC;
    a time without an offset is taken as UTC)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(), UTC)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC).isoformat()
    except OverflowError:  # before year 1 or after 9999 in UTC: the first or last time there is
        ahead = (value.utcoffset() or timedelta()) > timedelta()
        return (datetime.min if ahead else datetime.max).replace(tzinfo=UTC).isoformat()


class NewChat(CapsBody):
    title: str | None = Field(default=None, description="a title; one is made from the first message when left out")
    root: str | None = Field(
        default=None, description="the project root its agents work in (an absolute path); the hub's own when left out"
    )
    model: Text | None = Field(
        default=None, description="a model tag or litellm name for its dispatch agents; the hub's default when left out"
    )


class ChatMessageRequest(Body):
    text: Text = Field(description="what to tell the chat's dispatch agent")


class ForkRequest(Body):
    message_id: Text = Field(description="the last message the new chat shares with this one")


def chats_router(service: HubService) -> APIRouter:
    router = APIRouter(prefix="/api/chats", tags=["chats"])

    @router.post("", status_code=201)
    async def create_chat(body: NewChat | None = None) -> ChatView:
        """Start a chat (its dispatch agent starts with the first message); its caps are those of
        each dispatch agent it starts."""
        if body is None:
            return await service.create_chat()
        return await service.create_chat(body.title, root=body.root, caps=body.caps(), model=body.model)

    @router.get("")
    async def list_chats(
        q: Annotated[str | None, Query(description="words to find in a chat's title or messages")] = None,
        since: Annotated[Time | None, Query(description="only chats updated at or after this")] = None,
        until: Annotated[Time | None, Query(description="only chats updated before this")] = None,
    ) -> list[ChatView]:
        """The chats, newest first; with ``q``, those whose title or content match. ``since`` and
        ``until`` are ISO 8601 dates or times (UTC unless they carry an offset)."""
        return await service.chats(q or None, _utc(since), _utc(until))

    @router.get("/{chat_id}")
    async def get_chat(chat_id: ChatId) -> ChatDetail:
        """A chat with its messages, oldest first (for a fork: the shared history, then its own)."""
        return await service.chat(chat_id)

    @router.post("/{chat_id}/messages", status_code=201)
    async def post_message(chat_id: ChatId, body: ChatMessageRequest) -> ChatMessageView:
        """Send a message to the chat's dispatch agent (starting it, or continuing it)."""
        return await service.post_chat_message(chat_id, body.text)

    @router.post("/{chat_id}/fork", status_code=201)
    async def fork_chat(chat_id: ChatId, body: ForkRequest) -> ChatView:
        """A new chat sharing this one's history up to ``message_id``; the original is unchanged."""
        return await service.fork_chat(chat_id, body.message_id)

    return router
