"""``dispatch mcp`` attached to a running hub: a stdio MCP server that forwards to the hub's ``/mcp``.

An MCP client (Claude Desktop) starts ``dispatch mcp`` as a subprocess and speaks stdio to it.
When a hub already runs for the data directory, every tool list and tool call is passed to that
hub's streamable-HTTP endpoint with its token, and the hub's progress notifications are passed
back; the tools are exactly the hub's (see :mod:`dispatch.hub.mcp.tools`). What the command was
started with (``--root``, ``--model``) fills in a ``start`` call that leaves them out, so its
tasks work in that project, with that model, whichever project the hub was started for.
"""

from __future__ import annotations

from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from dispatch.hub.mcp.tools import set_log_level


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

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        async def forward_progress(progress: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(progress, total, message)

        arguments = dict(params.arguments or {})
        if params.name == "start":
            arguments = defaults | {k: v for k, v in arguments.items() if v is not None}
        return await upstream.call_tool(params.name, arguments, progress_callback=forward_progress)

    server = Server[Any]("dispatch", on_list_tools=list_tools, on_call_tool=call_tool)
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_log_level)  # answered here
    return server
