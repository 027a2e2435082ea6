"""``python -m dispatch.servers.web``: the ``web`` tool server over stdio."""

from dispatch.servers.web import main

main()
