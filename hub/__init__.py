"""The hub: the one long-lived process that runs agents, keeps state and serves the API.

Its rooms, each a package whose ``__init__`` says what it holds. A room imports only the rooms
below it (import-linter's ``hub-layers`` contract in pyproject.toml, checked by the test suite):

    cli/       the ``dispatch`` command: run, serve, mcp, resume, logs, diff, rewind, doctor, skills
    api/       the hub over HTTP and WebSocket (routes by resource)   | side by side, neither
    mcp/       the hub as an MCP server, and its stdio proxy          | imports the other
    service/   the hub behind its interfaces: Hub, chats, threads, approvals, resume, lifecycle, traces
    store/     the only SQL: the database, its schema, agents' records, the journal
    agents/    spec, catalog (templates + skills -> specs), the loop, the tree, link, access, budgets
    changes/   what agents changed in files: snapshots in a shadow git store, diffs, rewinds, worktrees
    mounts/    an agent's tool servers as an MCP client; outside servers, their pins; the config's hooks
    config/    what the files say: config, templates, skills, permissions, outside servers, hooks, AGENTS.md
    policy/    pure rules: the built-in servers, grants, checkpoints
    llm/       model calls: the client seam, the model worker, keys, the router, the ledger protocol
    views.py   the JSON shapes the interfaces return
    events.py  the event bus and its events
    heap.py  ids.py  errors.py  loop.py  times.py   leaves (loop.py: the served hub's event loop, the API first)

``dispatch.servers`` (the tool servers and the sandbox) imports nothing of the hub: the hub mounts
them, never the other way round.
"""
