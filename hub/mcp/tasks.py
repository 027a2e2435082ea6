"""``start`` as an MCP task: the Tasks extension (``io.modelcontextprotocol/tasks``, 2026-07-28).

A client that declares the extension in its request's capabilities gets, for a ``start`` call, a
task handle (``resultType: "task"``) instead of the tool's result; the task is the top agent it
started, and its id is the agent's. The client then follows it the standard way: ``tasks/get``
(the task's status, and once it is done the ``CallToolResult`` that ``wait`` would give),
``tasks/cancel`` (the agent and everything it started are cancelled) and ``tasks/update``
(acknowledged: an agent's questions go through the hub's approvals and messages, never a task's
input requests). A client without the extension calls ``start`` and ``wait`` as before.

The tasks are read through a :class:`TaskBackend`: the hub's service in the hub
(:class:`ServiceTasks`), the running hub's own tools from ``dispatch mcp``'s stdio proxy.

The SDK offers the extension mechanism (:class:`mcp.server.extension.Extension`: new request
methods and a ``tools/call`` interceptor) but not the Tasks extension itself, so it is written
here against the extension's specification.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolRequestParams, RequestParams, TextContent
from pydantic import BaseModel, Field

from dispatch.hub.errors import UserError
from dispatch.hub.service.contract import HubService
from dispatch.hub.times import iso, now

TASKS = "io.modelcontextprotocol/tasks"
POLL_INTERVAL_MS = 1000
TASK_TOOLS = frozenset({"start"})
"""The tools a client with the extension gets a task from."""

STATUS = {"done": "completed", "failed": "completed", "cancelled": "cancelled"}
"""An agent's state as a task's status; every other state is ``working`` (an ``interrupted``
agent too: it can be resumed). A failed agent is a completed task whose result is an error, as
a tool's error result is."""


class TaskParams(RequestParams):
    """The params of ``tasks/get`` and ``tasks/cancel``."""

    task_id: str = Field(alias="taskId")


class UpdateTaskParams(TaskParams):
    """The params of ``tasks/update``."""

    input_responses: dict[str, Any] = Field(default_factory=dict[str, Any], alias="inputResponses")


def _declared(ctx: ServerRequestContext[Any, Any]) -> bool:
    capabilities = ctx.session.client_capabilities
    return bool(capabilities and capabilities.extensions and TASKS in capabilities.extensions)


@dataclass(frozen=True)
class TaskAgent:
    """What a task shows of its agent."""

    id: str
    state: str
    reason: str
    report: str | None
    error: str | None


class TaskBackend(Protocol):
    """Where tasks' agents are read and cancelled; a :class:`UserError` for an unknown id."""

    async def agent(self, agent_id: str) -> TaskAgent: ...
    async def cancel(self, agent_id: str) -> None: ...


class ServiceTasks:
    """Tasks' agents through the hub's service."""

    def __init__(self, service: HubService) -> None:
        self._service = service

    async def agent(self, agent_id: str) -> TaskAgent:
        found = await self._service.agent(agent_id)
        return TaskAgent(found.id, found.state, found.reason, found.report, found.error)

    async def cancel(self, agent_id: str) -> None:
        await self._service.cancel(agent_id)


class HubTasks(Extension):
    """The Tasks extension over a :class:`TaskBackend`."""

    identifier = TASKS

    def __init__(self, backend: TaskBackend) -> None:
        self._backend = backend
        self._created: dict[str, str] = {}
        """When each task was created (ISO time), by id."""
        self._updated: dict[str, tuple[str, str]] = {}
        """Each task's status as last seen, and since when."""

    def methods(self) -> list[MethodBinding]:
        return [
            MethodBinding("tasks/get", TaskParams, self._get),
            MethodBinding("tasks/cancel", TaskParams, self._cancel),
            MethodBinding("tasks/update", UpdateTaskParams, self._update),
        ]

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        result = await call_next(ctx)
        if params.name not in TASK_TOOLS or not _declared(ctx) or _is_error(result):
            return result
        agent_id = str(json.loads(_text(result))["agent_id"])
        self._created[agent_id] = iso(now())
        return {"resultType": "task", **self._task(await self._agent(agent_id))}

    async def _agent(self, task_id: str) -> TaskAgent:
        try:
            return await self._backend.agent(task_id)
        except UserError as error:
            raise MCPError(code=INVALID_PARAMS, message=f"task {task_id!r}: {error}") from error

    def _task(self, agent: TaskAgent) -> dict[str, Any]:
        status = STATUS.get(agent.state, "working")
        at = iso(now())
        seen = self._updated.get(agent.id)
        if seen is None or seen[0] != status:
            seen = self._updated[agent.id] = (status, at)
        task: dict[str, Any] = {
            "taskId": agent.id,
            "status": status,
            "statusMessage": f"{agent.state}{f': {agent.reason}' if agent.reason else ''}",
            "createdAt": self._created.setdefault(agent.id, at),
            "lastUpdatedAt": seen[1],
            "ttlMs": None,  # the hub keeps its agents
        }
        if status == "working":
            task["pollIntervalMs"] = POLL_INTERVAL_MS
        return task

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> dict[str, Any]:
        agent = await self._agent(params.task_id)
        task = self._task(agent)
        if task["status"] == "completed":
            failed = agent.state != "done"
            body = {"agent_id": agent.id, "state": agent.state, "report": agent.report, "error": agent.error}
            text = TextContent(text=json.dumps(body, indent=1))
            task["result"] = {"content": [text.model_dump(by_alias=True)], "isError": failed}
        return task

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> dict[str, Any]:
        await self._agent(params.task_id)
        try:
            await self._backend.cancel(params.task_id)
        except UserError as error:
            raise MCPError(code=INVALID_PARAMS, message=f"task {params.task_id!r}: {error}") from error
        return {}

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams) -> dict[str, Any]:
        await self._agent(params.task_id)
        return {}


def _dumped(result: HandlerResult) -> dict[str, Any]:
    return result.model_dump(by_alias=True, mode="json") if isinstance(result, BaseModel) else dict(result or {})


def _is_error(result: HandlerResult) -> bool:
    return bool(_dumped(result).get("isError", True))


def _text(result: HandlerResult) -> str:
    content: list[dict[str, Any]] = _dumped(result).get("content", [])
    return "".join(str(c.get("text", "")) for c in content if c.get("type") == "text")
