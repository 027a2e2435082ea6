"""``dispatch mcp``: the hub's MCP tools over stdio, for Claude Desktop and any MCP client.

This process forwards to the ``/mcp`` endpoint of the hub serving the data directory, with the
token from the data directory, so the client, the web UI and other clients see the same agents.
When no hub runs, it starts one in the background first (:mod:`dispatch.hub.cli.background`, as
``dispatch serve`` would, with its lock and log), so work started from the client goes on after
the client closes; ``dispatch stop`` stops that hub.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
from mcp.server.stdio import stdio_server

from dispatch.hub.api.auth import load_or_create_token
from dispatch.hub.cli.background import start_background_hub
from dispatch.hub.errors import UserError, unwrap
from dispatch.hub.mcp.proxy import build_proxy, hub_client
from dispatch.hub.service.lifecycle import prepare_data_dir, running_hub

EXIT_OK, EXIT_USAGE = 0, 2


async def _attached(address: str, data_dir: Path, start_defaults: dict[str, str]) -> None:
    async with hub_client(f"{address}/mcp", load_or_create_token(data_dir)) as upstream:
        proxy = build_proxy(upstream, start_defaults)
        async with stdio_server() as (read, write):
            await proxy.run(read, write, proxy.create_initialization_options())


def _say(text: str) -> None:
    print(f"dispatch mcp: {text}", file=sys.stderr, flush=True)


def run_mcp(root: Path | None, model: str | None) -> int:
    """Serve the hub's MCP tools on stdin/stdout; the exit code. ``root``: the project asked for
    (None: the running hub's, or the current directory's)."""
    data_dir = prepare_data_dir(None)
    info = running_hub(data_dir)
    try:
        if info is None:
            here = (root or Path(".")).resolve()
            info = start_background_hub(here, data_dir, model)
            _say(f"started a hub of {here} in the background (pid {info.pid}); `dispatch stop` stops it")
        if info.address is None:
            raise UserError(
                f"a hub without HTTP holds {data_dir} ({info.describe()}: a `dispatch run`); "
                "wait for it to finish, or give this one another data directory (DISPATCH_HOME)"
            )
        defaults = {} if root is None else {"root": str(root.resolve())}
        defaults |= {} if model is None else {"model": model}
        where = f"; its tasks start in {defaults['root']}" if root is not None else ""
        _say(f"attached to the hub at {info.address}{where}")
        anyio.run(_attached, info.address, data_dir, defaults)
    except Exception as raised:
        error = unwrap(raised)
        if isinstance(error, UserError):
            _say(f"error: {error}")
            return EXIT_USAGE
        raise
    return EXIT_OK
