"""The ``fs`` tool server: read, write, edit, list, glob and grep inside one project root.

    server.py   the MCP face: plan_server / build_server for a root and write scopes, main (stdio)
    scope.py    FsScope: every path resolved beneath the root (openat2), write scopes, denied paths
    io.py       reading and writing files: line ranges, caps, binary detection, atomic writes
    ignore.py   GitIgnores: what the project's .gitignore files leave out of grep and glob

``python -m dispatch.servers.fs --root DIR [--write PATH ...]`` serves it over stdio. The package
imports nothing itself, so reading one of its rules (``scope``) does not load the MCP SDK.
"""
