"""``python -m dispatch.servers.web``: the ``web`` tool server over stdio."""

from dispatch.servers.web.server import main

main()
