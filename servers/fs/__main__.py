"""``python -m dispatch.servers.fs``: the ``fs`` tool server over stdio."""

from dispatch.servers.fs.server import main

main()
