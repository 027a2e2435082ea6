"""``python -m dispatch.servers.fs``: the ``fs`` tool server over stdio."""

from dispatch.servers.fs import main

main()
