"""``python -m dispatch.servers.lsp --root DIR [--settings JSON]``: the ``lsp`` tools over stdio,
with a language-server manager of their own."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import anyio
from pydantic import ValidationError

from dispatch.servers._base import existing_root, root_argument
from dispatch.servers.lsp.manager import LspManager
from dispatch.servers.lsp.server import build_server
from dispatch.servers.lsp.settings import LspSettings


async def _serve(root: Path, settings: LspSettings, timeout_s: float) -> None:
    async with LspManager(settings, timeout_s=timeout_s) as manager:
        await build_server(root, manager).run_stdio_async()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments and serve until stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m dispatch.servers.lsp", description=__doc__)
    root_argument(parser)
    parser.add_argument("--settings", default="{}", help="the lsp config section as JSON, e.g. '{\"go\": false}'")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a server's answer")
    args = parser.parse_args(argv)
    root = existing_root(parser, args.root)
    try:
        settings = LspSettings.model_validate_json(args.settings)
    except ValidationError as error:
        parser.error(f"--settings: {error}")
    logging.basicConfig(level=logging.WARNING)
    anyio.run(_serve, root, settings, args.timeout)


if __name__ == "__main__":
    main()
