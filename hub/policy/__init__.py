"""What an agent may do, as pure rules over plain values: no live objects, no files read.

servers.py         the one table of built-in tool servers (name, grant flag, always mounted, untrusted)
grants.py          Grants: write scopes, server flags and allow-lists, depth; narrowing a child's
outside_grants.py  grants of outside MCP servers (config ``mcp_servers``) by name and tool
checkpoints.py     Checkpoints: where an agent stops for the user's approval
"""
