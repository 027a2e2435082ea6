"""Standalone MCP tool servers, each runnable as `python -m dispatch.servers.NAME` over stdio.

Shared by them (and by the hub, which may import this package but never the other way round):
``_base`` (the MCP SDK's server class and start-up), ``hublink`` (what a server may ask of the
hub), ``paths`` (whether one path lies within another) and ``sandbox`` (the OS sandbox).
"""
