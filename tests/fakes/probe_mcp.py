"""A small outside MCP server for the tests of ``mcp_servers``: ``echo``, ``add`` and ``pid`` (which
process answers, to tell a shared server from one per agent).

Run as a stdio server with ``python probe_mcp.py [DESCRIPTION_FILE]``: ``echo``'s description is
read from that file at start, so a test can change a tool list between two starts.
:func:`build` gives the same server in-process, e.g. to serve it over streamable HTTP.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer

DEFAULT_DESCRIPTION = "Echo the text back."


def build(echo_description: str = DEFAULT_DESCRIPTION) -> MCPServer:
    server = MCPServer("probe", log_level="WARNING")

    @server.tool(description=echo_description)
    def echo(text: str) -> str:
        return f"echo: {text}"

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @server.tool()
    def pid() -> str:
        """The process id of the server."""
        return str(os.getpid())

    return server


if __name__ == "__main__":
    description = Path(sys.argv[1]).read_text().strip() if len(sys.argv) > 1 else DEFAULT_DESCRIPTION
    build(description).run("stdio")
