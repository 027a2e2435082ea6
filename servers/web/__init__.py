"""The ``web`` tool server: fetch pages and search, under the agent's web grants.

    server.py   the MCP face: plan_server / build_server, main (stdio)
    policy.py   WebPolicy: which hosts and networks an agent may reach (dependency-free: the hub's
                grants check the same rules)
    fetch.py    fetching a page: every address checked at connect time, every redirect hop, caps
    search.py   the search providers of the config's ``web.search``
    text.py     HTML to Markdown, text detection

``python -m dispatch.servers.web`` serves it over stdio. The package imports nothing itself, so
the hub's grants read ``policy`` without loading the MCP SDK.
"""
