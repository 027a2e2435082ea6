"""The one place the tool servers import the MCP SDK's server class, and their shared start-up.

Every tool server builds an ``MCPServer`` through :func:`new_server` and, when run as
``python -m dispatch.servers.NAME``, serves it over stdio through :func:`serve_stdio`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

__all__ = ["MCPServer", "ToolError", "existing_root", "new_server", "root_argument", "serve_stdio"]


def new_server(name: str, instructions: str) -> MCPServer:
    """A quiet ``MCPServer`` (the SDK logs every request at INFO otherwise)."""
    return MCPServer(name, instructions=instructions, log_level="WARNING")


def root_argument(parser: argparse.ArgumentParser) -> None:
    """Add the ``--root DIR`` option every file-touching server takes."""
    parser.add_argument("--root", required=True, type=Path, help="the project root the tools are scoped to")


def existing_root(parser: argparse.ArgumentParser, root: Path) -> Path:
    """The root as an absolute real path, or a usage error naming it."""
    if not root.is_dir():
        parser.error(f"--root {root}: not a directory")
    return root.resolve()


def serve_stdio(server: MCPServer) -> None:
    """Serve ``server`` over stdin/stdout until the client closes the pipe."""
    logging.basicConfig(level=logging.WARNING)
    server.run("stdio")
