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


def _say(text: str) -> None:
    print(f"dispatch mcp: {text}", file=sys.stderr, flush=True)


def run_mcp(root: Path | None, model: str | None) -> int:
    """Serve the hub's MCP tools on stdin/stdout; the exit code. ``root``: the project asked for
    (None: the running hub's, or the current directory's)."""
    data_dir = prepare_data_dir(None)
    info = running_hub(data_dir)
    try:
        if info is not None and info.address:
            if root is not None and info.root is not None and Path(info.root) != root.resolve():
                _say(
                    f"error: the running hub (pid {info.pid}, {info.address}) serves the project {info.root}, "
                    f"not {root.resolve()}: its agents would work there. Use it without --root, stop it, or give "
                    "this one another data directory (DISPATCH_HOME)"
                )
                return EXIT_USAGE
            if model is not None:
                _say(f"--model {model} is not used: the running hub's chats keep its own model")
            _say(f"attached to the hub at {info.address}")
            anyio.run(_attached, info.address, data_dir)
        else:
            here = root or Path(".")
            _say(f"serving a hub of {here.resolve()} in this process")
            anyio.run(_embedded, here, data_dir, model)
    except Exception as raised:
        error = unwrap(raised)
        if isinstance(error, UserError):
            _say(f"error: {error}")
            return EXIT_USAGE
        raise
    return EXIT_OK
