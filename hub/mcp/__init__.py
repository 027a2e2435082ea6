"""The hub as an MCP server, for Claude Desktop and other MCP clients.

tools.py  build_server: the hub's tools (start, message, wait, answer approvals...), logging/setLevel
tasks.py  the Tasks extension: start as a task clients poll, wait on and cancel
proxy.py  the stdio face that forwards to a running hub's MCP endpoint
"""
