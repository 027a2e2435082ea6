"""``dispatch mcp`` attached to a running hub: a stdio MCP server that forwards to the hub's ``/mcp``.

An MCP client (Claude Desktop) starts ``dispatch mcp`` as a subprocess and speaks stdio to it.
When a hub already runs for the data directory, every tool list and tool call is passed to that
hub's streamable-HTTP endpoint with its token, and the hub's progress notifications are passed
back; the tools are exactly the hub's (see :mod:`dispatch.hub.mcp.tools`). What the command was
started with (``--root``, ``--model``) fills in a ``start`` call that leaves them out, so its
tasks work in that project, with that model, whichever project the hub was started for. A client
declaring the Tasks extension gets ``start`` as a task here too (:mod:`dispatch.hub.mcp.tasks`),
its agent read through the hub's ``status``, ``result`` and ``cancel`` tools.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.server.context import HandlerResult, ServerRequestContext
from mcp.server.lowlevel import Server

from dispatch.hub.errors import UserError
from dispatch.hub.mcp.tasks import TASKS, HubTasks, TaskAgent
from dispatch.hub.mcp.tools import set_log_level

WHOLE_REPORT = 100_000_000
"""``max_chars`` of the ``result`` call that reads a finished task's report."""


class UpstreamTasks:
    """Tasks' agents through the running hub's own tools."""

    def __init__(self, upstream: Client) -> None:
        self._upstream = upstream

    async def _tool(self, name: str, **arguments: Any) -> dict[str, Any]:
        result = await self._upstream.call_tool(name, arguments)
        text = "".join(c.text for c in result.content if isinstance(c, types.TextContent))
        if result.is_error:
            raise UserError(text)
        found: dict[str, Any] = json.loads(text)
        return found

    async def agent(self, agent_id: str) -> TaskAgent:
        status = await self._tool("status", agent_id=agent_id)
        report = None
        if status["state"] == "done":
            report = (await self._tool("result", agent_id=agent_id, max_chars=WHOLE_REPORT))["report"]
        return TaskAgent(agent_id, status["state"], status["reason"], report, status["error"])

    async def cancel(self, agent_id: str) -> None:
        await self._tool("cancel", agent_id=agent_id)


def hub_client(url: str, token: str) -> Client:
    """An MCP client of the hub's ``/mcp`` endpoint, carrying the token."""
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=3600))
    return Client(streamable_http_client(url=url, http_client=http))


def build_proxy(upstream: Client, start_defaults: dict[str, str] | None = None) -> Server[Any]:
    """A server whose tools are the upstream's, each call forwarded with its progress;
    ``start_defaults`` (``root``, ``model``) fill in the arguments a ``start`` call leaves out."""
    defaults = dict(start_defaults or {})

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return await upstream.list_tools(cursor=params.cursor if params else None)

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> HandlerResult:
        async def forward(ctx: ServerRequestContext[Any, Any]) -> HandlerResult:
            async def forward_progress(progress: float, total: float | None, message: str | None) -> None:
                await ctx.session.report_progress(progress, total, message)

            arguments = dict(params.arguments or {})
            if params.name == "start":
                arguments = defaults | {k: v for k, v in arguments.items() if v is not None}
            return await upstream.call_tool(params.name, arguments, progress_callback=forward_progress)

        return await tasks.intercept_tool_call(params, ctx, forward)

    tasks = HubTasks(UpstreamTasks(upstream))

    server = Server[Any]("dispatch", on_list_tools=list_tools)
    server.add_request_handler("tools/call", types.CallToolRequestParams, call_tool)
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_log_level)  # answered here
    for method in tasks.methods():
        server.add_request_handler(method.method, method.params_type, method.handler)
    server.extensions[TASKS] = tasks.settings()
    return server
