"""``/api/agents``: the tree of agents, each one's transcript, and what the user may do to an agent
(message it, switch its model, cancel it, resume it, see and rewind its changes) or start one."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Response
from pydantic import Field

from dispatch.hub.api.common import Body, CapsBody, Text
from dispatch.hub.service.contract import HubService
from dispatch.hub.views import AgentChanges, AgentDetail, AgentView, RewindView, View
from dispatch.servers.hublink import MessageKind

AgentId = Annotated[str, Path(description="the agent's id, as GET /api/agents lists it")]
UserKind = Literal["instruction", "correction", "context", "data"]


class StartRequest(CapsBody):
    task: Text = Field(description="what the new top agent should do")
    template: str | None = Field(default=None, description="its template; the default one when left out")
    model: str | None = Field(default=None, description="a model tag or litellm name; the template's when left out")
    detached: bool = Field(default=False, description="give it a user thread of its own (it may ask the user)")
    root: str | None = Field(
        default=None, description="the project root it works in (an absolute path); the hub's own when left out"
    )


class MessageRequest(Body):
    text: Text = Field(description="the message; the agent reads it after its next tool result")
    kind: UserKind = Field(default="instruction", description="how the agent should take it")


class MessageAccepted(View):
    message_id: str = Field(description="a message.delivered event with this id follows once the agent reads it")


class RewindRequest(Body):
    force: bool = Field(default=False, description="rewind even the files someone changed since")
    undo: bool = Field(default=False, description="undo the agent's last rewind instead")


class ModelRequest(Body):
    model: Text = Field(description="a model tag or litellm name; applies from its next model call")


def _summary(detail: AgentDetail) -> AgentView:
    return AgentView.model_validate(detail.model_dump(exclude={"transcript", "progress", "compacted_at"}))


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (or ``*``), weak or strong."""
    if if_none_match is None:
        return False
    offered = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in offered or "*" in offered


def agents_router(service: HubService) -> APIRouter:
    router = APIRouter(prefix="/api/agents", tags=["agents"])

    @router.get(
        "",
        response_model=list[AgentView],
        responses={304: {"description": "the list is as the ETag named in If-None-Match says: no body"}},
    )
    async def list_agents(if_none_match: Annotated[str | None, Header()] = None) -> Response:
        """Every agent of the hub, parents before their children (``parent_id`` links the tree).
        The answer's ``ETag`` names the list as it is: a poller sending it back as ``If-None-Match``
        gets 304 and no body while nothing of any agent changed."""
        body = await service.agents_json()
        etag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}  # a browser asks again each time, with its tag
        if _matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)

    @router.post("", status_code=201)
    async def start_agent(body: StartRequest) -> AgentView:
        """Start a top agent on a task."""
        return await service.start(
            body.task,
            template=body.template,
            model=body.model,
            detached=body.detached,
            root=body.root,
            caps=body.caps(),
        )

    @router.get("/{agent_id}")
    async def get_agent(agent_id: AgentId) -> AgentDetail:
        """One agent with its transcript (OpenAI-format messages) and progress notes."""
        return await service.agent(agent_id)

    @router.post("/{agent_id}/messages", status_code=202)
    async def message_agent(agent_id: AgentId, body: MessageRequest) -> MessageAccepted:
        """Queue a message for the agent; it is delivered at its next tool boundary."""
        return MessageAccepted(message_id=await service.send(agent_id, body.text, MessageKind(body.kind)))

    @router.post("/{agent_id}/model")
    async def switch_model(agent_id: AgentId, body: ModelRequest) -> AgentView:
        """Switch the agent's model from its next model call on, its transcript intact."""
        await service.switch_model(agent_id, body.model)
        return _summary(await service.agent(agent_id))

    @router.post("/{agent_id}/cancel")
    async def cancel_agent(agent_id: AgentId) -> AgentView:
        """Cancel the agent and, through it, its descendants."""
        return await service.cancel(agent_id)

    @router.post("/{agent_id}/compact", status_code=202)
    async def compact_agent(agent_id: AgentId) -> AgentView:
        """Have a running agent compact what it sends its model before its next call (the older
        part of its transcript summarised; the transcript is kept whole). ``agent.compacted`` follows."""
        return await service.compact(agent_id)

    @router.post("/{agent_id}/resume")
    async def resume_agent(agent_id: AgentId) -> AgentView:
        """Continue an interrupted agent from its last persisted step (its unfinished children too)."""
        return await service.resume(agent_id)

    @router.get("/{agent_id}/changes")
    async def agent_changes(
        agent_id: AgentId, own: Annotated[bool, Query(description="the agent alone, not its descendants")] = False
    ) -> AgentChanges:
        """What the agent and its descendants changed in the project's files, and the unified diff."""
        return await service.changes(agent_id, own=own)

    @router.post("/{agent_id}/rewind")
    async def rewind_agent(agent_id: AgentId, body: RewindRequest | None = None) -> RewindView:
        """Put back the files the agent and its descendants changed (cancelling it if it runs);
        409 naming the files changed since, unless ``force``; ``undo`` undoes its last rewind."""
        body = body or RewindRequest()
        return await service.rewind(agent_id, force=body.force, undo=body.undo)

    return router
