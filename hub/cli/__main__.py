"""``python -m dispatch.hub.cli``: the ``dispatch`` command."""

from dispatch.hub.cli import main

main()
