"""``/api/threads``: detached agents' conversations with the user. A detached agent's ``ask_user``
leaves it ``waiting_user`` with its question in its thread; the user answers with
``POST /api/threads/{agent_id}/messages {text}``, which ends the wait (other agents go on meanwhile)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import Field

from dispatch.hub.api.common import Body, Text
from dispatch.hub.service.contract import HubService
from dispatch.hub.service.threads import ThreadDetail, ThreadMessageView, ThreadView

AgentId = Annotated[str, Path(description="the detached agent's id")]


class Answer(Body):
    text: Text = Field(description="the answer (or any message) for the agent; its ask_user returns it")


def threads_router(service: HubService) -> APIRouter:
    router = APIRouter(prefix="/api/threads", tags=["threads"])

    @router.get("")
    async def list_threads() -> list[ThreadView]:
        """Every detached agent's thread, newest first; ``question`` is set while one waits on the user."""
        return await service.threads()

    @router.get("/{agent_id}")
    async def get_thread(agent_id: AgentId) -> ThreadDetail:
        """One thread: the agent's questions and the user's answers, oldest first."""
        return await service.thread(agent_id)

    @router.post("/{agent_id}/messages", status_code=201)
    async def answer(agent_id: AgentId, body: Answer) -> ThreadMessageView:
        """Answer the agent in its thread: it reads the answer at once if it waits on the user."""
        return await service.answer_thread(agent_id, body.text)

    return router
