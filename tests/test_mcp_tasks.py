"""The hub's MCP face beyond its tools, through real MCP client sessions: ``start`` as a task of
the Tasks extension (polled, waited on and cancelled the standard way, by a client extension
claiming the ``task`` result), and ``logging/setLevel`` on ``/mcp`` and through ``dispatch mcp``
(MCP's conformance scenario ``logging-set-level``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CallToolResult,
    EmptyResult,
    Request,
    RequestParams,
    Result,
    SetLevelRequest,
    SetLevelRequestParams,
    TextContent,
)

from dispatch.hub.mcp.tools import build_server
from dispatch.hub.service.hub import Hub
from tests.agent_helpers import call
from tests.api_helpers import MODEL, ServedHub
from tests.fakes.scripted_llm import Reply, ScriptedLLM

pytestmark = pytest.mark.anyio
TASKS = "io.modelcontextprotocol/tasks"
TERMINAL = ("completed", "failed", "cancelled")


class TaskHandle(Result):
    """A ``CreateTaskResult``, as the extension's specification has it."""

    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None


class TaskState(Result):
    """A ``tasks/get`` answer."""

    task_id: str
    status: str
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None
    result: dict[str, Any] | None = None


class TaskId(RequestParams):
    task_id: str


class GetTask(Request[TaskId, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskId


class CancelTask(Request[TaskId, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskId


async def get_task(client: Any, task_id: str) -> TaskState:
    return await client.send_request(GetTask(params=TaskId(task_id=task_id)), TaskState)


async def until_finished(ctx: Any, task_id: str) -> TaskState:
    """Poll ``tasks/get`` at the interval the server asks for until the task is finished."""
    with anyio.fail_after(60):
        while (state := await get_task(ctx, task_id)).status not in TERMINAL:
            await anyio.sleep((state.poll_interval_ms or 100) / 1000)
    return state


class TasksClient(ClientExtension):
    """The requester's side of the Tasks extension: a ``task`` result is polled to its end."""

    identifier = TASKS

    def __init__(self) -> None:
        self.handles: list[TaskHandle] = []

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=TaskHandle, resolve=self._resolve)]

    async def _resolve(self, handle: TaskHandle, ctx: ClaimContext) -> CallToolResult:
        self.handles.append(handle)
        finished = await until_finished(ctx.session, handle.task_id)
        assert finished.result is not None, finished
        return CallToolResult.model_validate(finished.result)


def body(result: CallToolResult) -> dict[str, Any]:
    return json.loads("".join(c.text for c in result.content if isinstance(c, TextContent)))


async def test_start_is_a_task_polled_to_its_report(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script("[task-a]", [Reply(tool_calls=[call("list_dir", path=".")]), Reply(text="task a done")])
    scripted_llm.script("[plain]", [Reply(text="plain done")])
    (tmp_path / "root").mkdir()
    tasks = TasksClient()

    async with (
        Hub.open(tmp_path / "root", tmp_path / "data", default_model=MODEL) as hub,
        Client(build_server(hub), extensions=[tasks]) as client,
        Client(build_server(hub)) as plain,
    ):
        assert TASKS in (client.server_capabilities.extensions or {})
        done = await client.call_tool("start", {"task": "[task-a] look around"})
        started = await plain.call_tool("start", {"task": "[plain] say so"})
        waited = await plain.call_tool("wait", {"agent_id": body(started)["agent_id"], "timeout_s": 30})

    [handle] = tasks.handles
    assert handle.status == "working" and handle.poll_interval_ms and handle.ttl_ms is None
    assert not done.is_error and body(done) | {"error": None} == {
        "agent_id": handle.task_id,
        "state": "done",
        "report": "task a done",
        "error": None,
    }
    assert body(started)["agent_id"].startswith("a-"), "a client without the extension gets the tool's result"
    assert body(waited)["report"] == "plain done"


async def test_start_is_a_task_on_the_served_endpoint_and_through_dispatch_mcp(
    scripted_llm: ScriptedLLM, served: ServedHub, project: Path
) -> None:
    scripted_llm.script("[task-http]", [Reply(text="over http")])
    scripted_llm.script("[task-stdio]", [Reply(text="over stdio")])
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {served.token}"}, timeout=30)
    over_http, over_stdio = TasksClient(), TasksClient()

    endpoint = streamable_http_client(url=served.base_url + "/mcp", http_client=http)
    async with Client(endpoint, extensions=[over_http]) as c:
        by_http = await c.call_tool("start", {"task": "[task-http] say so", "model": MODEL})
    async with Client(stdio_mcp(project), extensions=[over_stdio]) as c:
        by_stdio = await c.call_tool("start", {"task": "[task-stdio] say so"})
        with pytest.raises(MCPError, match="a-00000000"):
            await get_task(c.session, "a-00000000")

    handles = over_http.handles + over_stdio.handles  # a quick agent may be done by the time its handle is made
    assert len(handles) == 2 and {h.status for h in handles} <= {"working", "completed"}
    assert body(by_http)["report"] == "over http" and body(by_http)["agent_id"] == over_http.handles[0].task_id
    assert body(by_stdio)["report"] == "over stdio" and body(by_stdio)["agent_id"] == over_stdio.handles[0].task_id


async def test_a_task_is_cancelled_the_standard_way(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script("[task-slow]", [Reply(text="too late", delay_s=3)])
    (tmp_path / "root").mkdir()

    async with (
        Hub.open(tmp_path / "root", tmp_path / "data", default_model=MODEL) as hub,
        Client(build_server(hub), extensions=[TasksClient()]) as client,
    ):
        handle = await client.session.call_tool("start", {"task": "[task-slow] take your time"}, allow_claimed=True)
        assert isinstance(handle, TaskHandle) and handle.status == "working"
        assert (await get_task(client.session, handle.task_id)).status == "working"
        with anyio.move_on_after(60):
            while not scripted_llm.requests_for("[task-slow]"):  # cancelled while its model call is out
                await anyio.sleep(0.05)
        assert scripted_llm.requests_for("[task-slow]"), (await hub.agent(handle.task_id)).model_dump()
        await client.session.send_request(CancelTask(params=TaskId(task_id=handle.task_id)), EmptyResult)
        finished = await until_finished(client.session, handle.task_id)
        with pytest.raises(MCPError, match="a-00000000"):
            await get_task(client.session, "a-00000000")
        state = (await hub.agent(handle.task_id)).state

    assert finished.status == "cancelled" and finished.result is None
    assert state == "cancelled"


def stdio_mcp(project: Path) -> StdioServerParameters:
    """``dispatch mcp`` for ``project``, attaching to the hub that serves the data directory."""
    args = ["-m", "dispatch.hub.cli", "mcp", "--root", str(project), "--model", MODEL]
    return StdioServerParameters(command=sys.executable, args=args, env=dict(os.environ))


def legacy_http(served: ServedHub) -> Client:
    """A client of ``/mcp`` that opens with the initialize handshake, as the conformance suite does."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {served.token}"}, timeout=30)
    return Client(streamable_http_client(url=served.base_url + "/mcp", http_client=http), mode="legacy")


async def set_level(client: Client) -> EmptyResult:
    request = SetLevelRequest(params=SetLevelRequestParams(level="debug"))
    return await client.session.send_request(request, EmptyResult)


async def test_set_level_is_answered_on_the_hubs_mcp_endpoint(scripted_llm: ScriptedLLM, served: ServedHub) -> None:
    async with legacy_http(served) as client:
        assert client.server_capabilities.logging is not None
        assert await set_level(client) == EmptyResult()
        assert {t.name for t in (await client.list_tools()).tools} >= {"start", "wait"}


async def test_set_level_is_answered_through_dispatch_mcp(
    scripted_llm: ScriptedLLM, served: ServedHub, project: Path
) -> None:
    async with Client(stdio_mcp(project), mode="legacy") as client:
        assert client.server_capabilities.logging is not None
        assert await set_level(client) == EmptyResult()
