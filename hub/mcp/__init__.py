"""The hub as an MCP server, for Claude Desktop and other MCP clients.

tools.py  build_server: the hub's tools (start, message, wait, answer approvals...)
proxy.py  the stdio face that forwards to a running hub's MCP endpoint
"""
