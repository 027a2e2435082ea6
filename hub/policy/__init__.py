"""What an agent may do, as pure rules over plain values: no live objects, no files read.

servers.py         the one table of built-in tool servers (name, how a grant turns it on, what a child
                   inherits, untrusted output, its tools)
paths.py           root-relative paths in grants: normalizing, covers, overlaps
grants.py          Grants: write scopes, server flags and allow-lists, depth; narrowing a child's
outside_grants.py  grants of outside MCP servers (config ``mcp_servers``) by name and tool
checkpoints.py     Checkpoints: where an agent stops for the user's approval
"""
