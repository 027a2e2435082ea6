"""Who changed what: each agent's writing tool calls tracked in its project's shadow store.

:meth:`ChangeTracker.track` is the hook :class:`~dispatch.hub.mounts.toolset.Mounts` holds around
each tool call of an agent. Around a call that may write (an ``fs`` write tool, a ``shell``
command) it snapshots the agent's write scope before and after; calls of one agent that overlap
share one window (the first opens it, the last closes it), so no change falls between two. An
``fs`` write names its one file: that file alone is snapshotted around it, in a window of its own. What
differs between the two snapshots is handed to ``record`` (the tree announces it; the store keeps
it). A snapshot runs in a worker thread; one that fails (no ``git``, a broken store) is logged and
the call goes on untracked, since tracking must never stop an agent's work.

An agent's changes are read back with :func:`changes_of` (the records of the agents asked for,
folded per file, and their diff): the first state of each file before any of them changed it,
the last after.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.to_thread

from dispatch.hub.changes.shadow import FileChange, ShadowRepo, net_changes
from dispatch.hub.errors import DispatchError
from dispatch.hub.policy.paths import ROOT, covered_by_any, normalize_path
from dispatch.hub.policy.servers import FS, SHELL
from dispatch.hub.views import AgentChanges, ChangedFileView

log = logging.getLogger(__name__)

__all__ = ["WRITING_TOOLS", "ChangeLog", "ChangeTracker", "Snapshots", "changes_of"]

WRITING_TOOLS: dict[str, frozenset[str]] = {
    FS.name: frozenset(FS.write_tools),
    SHELL.name: frozenset(SHELL.tools or ()),
}
"""The tool calls tracked, by server: those that may change files in the project."""


class ChangeLog(Protocol):
    """Where the records of changes are kept (the hub's store)."""

    async def file_changes(self, agent_ids: Sequence[str]) -> list[FileChange]:
        """The changes the agents made and no rewind undid, in the order they were made."""
        ...


@dataclass(frozen=True)
class Snapshots:
    """One window of an agent's writing calls: its scope before and after, and what differs."""

    before: str
    after: str
    files: list[FileChange]


@dataclass
class _Window:
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    open_calls: int = 0
    before: str | None = None


class ChangeTracker:
    """The shadow stores of every project, under ``home`` (``<data dir>/changes``)."""

    def __init__(self, home: Path, log_: ChangeLog | None = None) -> None:
        self.home = home
        self.log = log_
        """Where records are read back (None: nowhere, so :meth:`changes` sees none)."""
        self._repos: dict[Path, ShadowRepo] = {}
        self._shared: dict[Path, Path] = {}
        self._windows: dict[str, _Window] = {}

    def repo(self, root: Path) -> ShadowRepo:
        """The shadow store of the project at ``root`` (GitMissing when git is not installed)."""
        repo = self._repos.get(root)
        if repo is None:
            repo = self._repos[root] = ShadowRepo(self.home, root, self._shared.get(root))
        return repo

    def share(self, root: Path, store: Path) -> None:
        """Snapshot the files at ``root`` (a child's worktree) into the store of the project at ``store``."""
        self._shared[root] = store

    def track(
        self, agent_id: str, root: Path, scope: Sequence[str], record: Callable[[Snapshots], None]
    ) -> Callable[[str, str, dict[str, Any]], AbstractAsyncContextManager[None]]:
        """The hook for one agent's mounts: ``hook(kind, name, arguments)`` around each tool call.
        An fs write of one path inside the scope is tracked on its own, that path alone (no walk of
        the scope); any other writing call shares the agent's window on its whole scope."""
        window = self._windows.setdefault(agent_id, _Window())
        scope = tuple(scope)

        @asynccontextmanager
        async def hook(kind: str, name: str, arguments: dict[str, Any]) -> AsyncGenerator[None]:
            if not scope or name not in WRITING_TOOLS.get(kind, ()):
                yield
                return
            path = _written_path(kind, arguments, scope)
            own = _Window() if path is not None else window
            narrowed = (path,) if path is not None else scope
            await self._open(own, root, narrowed, files=path is not None)
            try:
                yield
            finally:
                with anyio.CancelScope(shield=True):  # what a cancelled call wrote is recorded too
                    await self._close(own, root, narrowed, record, files=path is not None)

        return hook

    async def _snapshot(self, root: Path, scope: Sequence[str], files: bool) -> str | None:
        try:
            return await anyio.to_thread.run_sync(lambda: self.repo(root).snapshot(scope, files=files))
        except (DispatchError, OSError) as error:
            log.warning("change tracking is off for a write in %s: %s", root, error)
            return None

    async def _open(self, window: _Window, root: Path, scope: Sequence[str], *, files: bool) -> None:
        async with window.lock:
            if window.open_calls == 0:
                window.before = await self._snapshot(root, scope, files)
            window.open_calls += 1

    async def _close(
        self, window: _Window, root: Path, scope: Sequence[str], record: Callable[[Snapshots], None], *, files: bool
    ) -> None:
        async with window.lock:
            window.open_calls -= 1
            if window.open_calls or window.before is None:
                return
            before, window.before = window.before, None
            after = await self._snapshot(root, scope, files)
            if after is None or after == before:
                return
            changed = await anyio.to_thread.run_sync(lambda: self.repo(root).changes(before, after, scope))
            if changed:
                record(Snapshots(before, after, changed))

    async def changes(self, agent_id: str, root: Path, agent_ids: Sequence[str]) -> AgentChanges | None:
        """What ``agent_ids`` changed (as recorded), as ``agent_id``'s changes; None when there are
        no records to read or the store cannot be read."""
        if self.log is None:
            return None
        try:
            found = await self.log.file_changes(agent_ids)
            if not found:
                return AgentChanges(agent_id=agent_id, files=[], diff="")
            return await changes_of(self.repo(root), agent_id, found)
        except (DispatchError, OSError) as error:
            log.warning("the changes of %s cannot be read: %s", agent_id, error)
            return None

    def forget(self, agent_id: str) -> None:
        """Drop a finished agent's window."""
        self._windows.pop(agent_id, None)


def _written_path(kind: str, arguments: dict[str, Any], scope: Sequence[str]) -> str | None:
    """The one root-relative path an fs write names, when it lies inside ``scope`` (else None: the
    call is tracked on the whole scope, and the fs server decides about the path)."""
    path = arguments.get("path")
    if kind != FS.name or not isinstance(path, str):
        return None
    try:
        normal = normalize_path(path)
    except ValueError:
        return None
    return normal if normal != ROOT and covered_by_any(normal, scope) else None


async def changes_of(repo: ShadowRepo, agent_id: str, changes: Sequence[FileChange]) -> AgentChanges:
    """The agent's changes as the interfaces show them: each file folded from its first state to
    its last, counted, and their unified diff."""
    net = net_changes(changes)
    counts, diff = await anyio.to_thread.run_sync(repo.diff, net)
    files = [
        ChangedFileView(
            path=c.path,
            status=c.status,
            additions=counts.get(c.path, (0, 0))[0],
            deletions=counts.get(c.path, (0, 0))[1],
        )
        for c in net
    ]
    return AgentChanges(agent_id=agent_id, files=files, diff=diff)
