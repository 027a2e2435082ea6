"""The built-in tool servers: the one list every other room reads.

An outside MCP server (config ``mcp_servers``) may not take one of these names.
"""

from __future__ import annotations

BUILTIN_KINDS = ("inbox", "fs", "shell", "summon", "lsp", "web")
"""The built-in servers' names, in the order an agent's mounts list them."""
