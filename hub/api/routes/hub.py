"""``/api/hub``, ``/api/approvals``, ``/api/artifacts``, ``/api/usage``, ``/api/tool-servers`` and ``/api/health``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import Field

from dispatch.hub.api.common import Body
from dispatch.hub.service.contract import HubService
from dispatch.hub.views import (
    ApprovalView,
    ArtifactView,
    Decision,
    HubView,
    LimitsView,
    Remember,
    ToolServerView,
    UsageView,
    View,
)


class ApprovalAnswer(Body):
    decision: Decision = Field(description="approve or deny")
    remember: Remember = Field(
        default="once", description="once; session: not asked again this session; always: saved in the project config"
    )


class Health(View):
    status: Literal["ok"] = "ok"


class ProjectRequest(Body):
    root: str = Field(description="the project root (an absolute path to a directory)")


def misc_router(service: HubService) -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.get("/hub", tags=["hub"])
    async def about_hub() -> HubView:
        """The projects this hub serves, and which model a new chat uses and why."""
        return service.about()

    @router.post("/projects", tags=["hub"])
    async def open_project(body: ProjectRequest) -> HubView:
        """Serve another project too: its config, templates and skills are read and checked now;
        chats and agents may then be started there."""
        return await service.open_project(body.root)

    @router.get("/approvals", tags=["approvals"])
    async def list_approvals(
        state: Annotated[
            Literal["pending", "approved", "denied", "all"], Query(description="which approvals to list")
        ] = "pending",
    ) -> list[ApprovalView]:
        """Approvals: path permission prompts and checkpoints, each naming the chain of agents that asks."""
        return await service.approvals(None if state == "all" else state)

    @router.post("/approvals/{approval_id}", tags=["approvals"])
    async def answer_approval(
        approval_id: Annotated[str, Path(description="the approval's id")], body: ApprovalAnswer
    ) -> ApprovalView:
        """Approve or deny a pending approval; the asking agent goes on (or stops, saying why)."""
        return await service.answer_approval(approval_id, body.decision, body.remember)

    @router.get("/artifacts", tags=["artifacts"])
    async def list_artifacts(
        q: Annotated[str | None, Query(description="words to find in an artifact's title or content")] = None,
        kind: Annotated[str | None, Query(description="only artifacts of this kind (plan, research, ...)")] = None,
    ) -> list[ArtifactView]:
        """Plans and research findings agents saved, newest first (without their content)."""
        return await service.artifacts(q or None, kind or None)

    @router.get("/artifacts/{artifact_id}", tags=["artifacts"])
    async def get_artifact(artifact_id: Annotated[str, Path(description="the artifact's id")]) -> ArtifactView:
        """One artifact with its content."""
        return await service.artifact(artifact_id)

    @router.get("/usage", tags=["usage"])
    async def usage() -> UsageView:
        """Tokens and cost: in total and by agent, key, model and day."""
        return await service.usage()

    @router.get("/tool-servers", tags=["tool servers"])
    async def tool_servers() -> list[ToolServerView]:
        """The config's outside MCP servers: transport, state (pinned, changed, unpinned, failed), their
        tools with descriptions, and the pending approval of a changed tool list. Starts nothing."""
        return await service.tool_servers()

    @router.get("/limits", tags=["limits"])
    async def limits() -> LimitsView:
        """The hub-wide limits (config ``limits``) and their queues: agents running and waiting for a
        running slot, model calls in flight and waiting for a slot."""
        return service.limits()

    @router.get("/health", tags=["health"])
    async def health() -> Health:
        """Whether the hub answers; needs no token."""
        return Health()

    return router
