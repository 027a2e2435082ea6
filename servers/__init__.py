"""Standalone MCP tool servers, each runnable as `python -m dispatch.servers.NAME` over stdio."""
