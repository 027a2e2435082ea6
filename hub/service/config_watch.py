"""Config that follows edits: the hub notices changes to its config files, templates and skills,
and agents started afterwards use them.

:class:`ConfigWatch` looks at the folders those come from (the user's ``~/.config/dispatch`` and
``~/.skills``, the project's ``.dispatch`` and ``.skills``) once a second: a file added, removed
or changed there makes it load the project's catalog again, checked as at start. A good catalog
replaces the tree's (running agents keep the spec they started with; the key router takes the new
``models`` section); a bad one is reported once, with the error naming the file and field, and the
last good catalog stays in force. Sections read only when the hub starts (``limits``, ``lsp``,
``mcp_servers``, ``sandbox``) take effect at the next start, and the report says so.

Polling, not an OS file watcher: the folders may not exist yet (a user creates ``.dispatch/``
while the hub runs), they hold a handful of small files, and a walk a second costs far less than
a native watcher dependency would.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.config.project import global_dir, project_dir
from dispatch.hub.config.skills import skills_home
from dispatch.hub.errors import ConfigError

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]
RESTART_SECTIONS = ("limits", "lsp", "mcp_servers", "sandbox")
"""Config sections the hub reads once, at start."""


def watched_folders(root: Path) -> list[Path]:
    """Where the config, templates and skills of the project at ``root`` come from."""
    return [global_dir(), skills_home(), project_dir(root), root / ".skills"]


def signature(folders: Sequence[Path]) -> Signature:
    """Every file under ``folders`` with its modification time and size (missing folders: none)."""
    found: list[tuple[str, int, int]] = []
    for folder in folders:
        for parent, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(parent, name)
                try:
                    stat = os.stat(path)
                except OSError:  # removed between the listing and the look: the next walk sees it
                    continue
                found.append((path, stat.st_mtime_ns, stat.st_size))
    return tuple(found)


@dataclass(frozen=True)
class Reloaded:
    """A good edit: the new catalog, and what of it waits for the next start."""

    catalog: Catalog
    needs_restart: tuple[str, ...]


class ConfigWatch:
    """Watches one project's config, templates and skills for as long as :meth:`run` runs."""

    def __init__(
        self,
        root: Path,
        current: Catalog,
        *,
        on_reload: Callable[[Reloaded], None],
        on_invalid: Callable[[str], None],
        interval_s: float = 1.0,
    ) -> None:
        self.root = root
        self.current = current
        self._on_reload = on_reload
        self._on_invalid = on_invalid
        self._interval_s = interval_s
        self._folders = watched_folders(root)
        self._reported: str | None = None

    async def run(self) -> None:
        seen = await anyio.to_thread.run_sync(signature, self._folders)
        while True:
            await anyio.sleep(self._interval_s)
            now = await anyio.to_thread.run_sync(signature, self._folders)
            if now != seen:
                seen = now
                await self.reload()

    async def reload(self) -> None:
        """Load the catalog again; hand on a good one, report a bad one (once per distinct error)."""
        try:
            catalog = await anyio.to_thread.run_sync(Catalog.load, self.root)
        except ConfigError as error:
            problem = str(error)
            if problem != self._reported:
                self._reported = problem
                log.warning("config edit refused, the last good config stays in force: %s", problem)
                self._on_invalid(problem)
            return
        self._reported = None
        old, new = self.current.config, catalog.config
        later = tuple(s for s in RESTART_SECTIONS if getattr(old, s) != getattr(new, s))
        self.current = catalog
        log.info(
            "config, templates and skills reloaded%s", f" ({', '.join(later)}: at the next start)" if later else ""
        )
        self._on_reload(Reloaded(catalog, later))
