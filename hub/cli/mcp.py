"""``dispatch mcp``: the hub's MCP tools over stdio, for Claude Desktop and any MCP client.

When a hub already runs on the data directory (``dispatch serve``), this process forwards to its
``/mcp`` endpoint with the token from the data directory, so both see the same agents. When none
runs, it opens a hub of its own in this process (taking the data directory's lock) and serves the
same tools from it until the client closes the pipe.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
from mcp.server.stdio import stdio_server

from dispatch.hub.api.auth import load_or_create_token
from dispatch.hub.errors import UserError, unwrap
from dispatch.hub.heap import settle_heap
from dispatch.hub.mcp.proxy import build_proxy, hub_client
from dispatch.hub.mcp.tools import build_server
from dispatch.hub.service.hub import Hub
from dispatch.hub.service.lifecycle import prepare_data_dir, running_hub

EXIT_OK, EXIT_USAGE = 0, 2


async def _attached(address: str, data_dir: Path) -> None:
    async with hub_client(f"{address}/mcp", load_or_create_token(data_dir)) as upstream:
        proxy = build_proxy(upstream)
        async with stdio_server() as (read, write):
            await proxy.run(read, write, proxy.create_initialization_options())


async def _embedded(root: Path, data_dir: Path, model: str | None) -> None:
    async with Hub.open(root, data_dir, default_model=model) as hub:
        settle_heap()
        await build_server(hub).run_stdio_async()


def run_mcp(root: Path, model: str | None) -> int:
    """Serve the hub's MCP tools on stdin/stdout; the exit code."""
    data_dir = prepare_data_dir(None)
    info = running_hub(data_dir)
    try:
        if info is not None and info.address:
            print(f"dispatch mcp: attached to the hub at {info.address}", file=sys.stderr, flush=True)
            anyio.run(_attached, info.address, data_dir)
        else:
            print(f"dispatch mcp: serving a hub of {root.resolve()} in this process", file=sys.stderr, flush=True)
            anyio.run(_embedded, root, data_dir, model)
    except Exception as raised:
        error = unwrap(raised)
        if isinstance(error, UserError):
            print(f"dispatch mcp: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        raise
    return EXIT_OK
