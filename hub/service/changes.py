"""What agents changed in the project's files, for the interfaces: an agent's diff, a rewind, its undo.

The records are the store's (``file_changes``, ``rewinds``), the files' contents the project's
shadow store (:mod:`dispatch.hub.changes`). An agent's changes are its descendants' too, unless
``own``. A rewind first cancels the agent if it runs (and so its descendants), then puts back
every file they changed, refused with a conflict naming the files someone changed since unless
forced; it is kept, so ``undo`` puts back what it found. An isolated child's changes are read
from, and rewound in, the tree its worktree merges into.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio
import anyio.to_thread

from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.changes.rewind import rewind_files
from dispatch.hub.changes.shadow import FileChange, ShadowRepo
from dispatch.hub.changes.tracker import ChangeTracker, changes_of
from dispatch.hub.errors import UnknownAgentError, UserError
from dispatch.hub.ids import new_id
from dispatch.hub.store.records import AgentRow, Records, blob_text, parse_blob
from dispatch.hub.views import AgentChanges, RewindView

__all__ = ["CHANGES_DIR", "WORKTREES_DIR", "ChangeDesk", "JournaledChanges"]

CHANGES_DIR = "changes"
"""The shadow stores' folder in the data directory (one per project)."""

WORKTREES_DIR = "worktrees"
"""The records of isolated children's git worktrees in the data directory (one file each)."""

CANCEL_WAIT_S = 30.0
"""How long a rewind waits for a running agent it cancelled to stop."""


class ChangeDesk:
    """Changes and rewinds over one store; ``tree`` (None: no agent runs here) to stop running
    agents, ``flush`` to commit what the journal holds before reading."""

    def __init__(
        self,
        records: Records,
        tracker: ChangeTracker,
        root: Path,
        *,
        tree: AgentTree | None = None,
        flush: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._records = records
        self._tracker = tracker
        self._root = root
        self._tree = tree
        self._flush = flush

    async def _subtree(self, agent_id: str) -> list[AgentRow]:
        if self._flush is not None:
            await self._flush()
        rows = await self._records.subtree(agent_id)
        if not rows:
            raise UnknownAgentError(f"no agent has the id {agent_id!r}")
        return rows

    async def _repo(self, row: AgentRow) -> ShadowRepo:
        """The store of the agent's project: for an agent in an isolated child's worktree, the
        store of the tree the worktree merges into (where its changes' contents are, and where its
        merged files are put back by a rewind)."""
        root = Path(row.root) if row.root else self._root
        parent = await self._records.agent_row(row.parent_id) if row.parent_id else None
        if parent is not None and (row.spec.isolation == "worktree" or parent.root == row.root):
            return await self._repo(parent)
        return self._tracker.repo(root)

    async def changes(self, agent_id: str, *, own: bool = False) -> AgentChanges:
        """What the agent (and its descendants, unless ``own``) changed: files and their diff."""
        rows = await self._subtree(agent_id)
        ids = [agent_id] if own else [row.id for row in rows]
        changes = await self._records.file_changes(ids)
        if not changes:
            return AgentChanges(agent_id=agent_id, files=[], diff="")
        return await changes_of(await self._repo(rows[0]), agent_id, changes)

    async def rewind(self, agent_id: str, *, force: bool = False, undo: bool = False) -> RewindView:
        """Put back what the agent and its descendants changed (``undo``: undo its last rewind)."""
        rows = await self._subtree(agent_id)
        repo = await self._repo(rows[0])
        if undo:
            return await self._undo(agent_id, repo, force=force)
        await self._stop(agent_id)
        found = await self._records.file_change_rows([row.id for row in rows])
        if not found:
            raise UserError(f"agent {agent_id} has changed no files (or they are rewound already); nothing to rewind")
        changes = [change for _, change in found]
        what = f"agent {agent_id}" + (" and its descendants" if len(rows) > 1 else "")
        restored = await anyio.to_thread.run_sync(lambda: rewind_files(repo, changes, force=force, what=what))
        rewind_id = new_id("rw")
        await self._records.add_rewind(
            rewind_id, agent_id, str(repo.root), _files_json(restored), [i for i, _ in found]
        )
        return RewindView(agent_id=agent_id, rewind_id=rewind_id, files=[c.path for c in restored])

    async def _undo(self, agent_id: str, repo: ShadowRepo, *, force: bool) -> RewindView:
        last = await self._records.last_rewind(agent_id)
        if last is None:
            raise UserError(f"agent {agent_id} has no rewind to undo")
        record = [_file_change(entry) for entry in json.loads(last["files"])]
        what = f"rewind {last['id']}"
        restored = await anyio.to_thread.run_sync(lambda: rewind_files(repo, record, force=force, what=what))
        await self._records.undo_rewind(last["id"])
        return RewindView(agent_id=agent_id, rewind_id=last["id"], files=[c.path for c in restored], undone=True)

    async def _stop(self, agent_id: str) -> None:
        """Cancel the agent if it runs here, and wait until it (and so its descendants) stopped."""
        tree = self._tree
        agent = tree.agents.get(agent_id) if tree is not None else None
        if tree is None or agent is None or agent.finished.is_set():
            return
        tree.cancel(agent_id)
        with anyio.move_on_after(CANCEL_WAIT_S):
            await agent.finished.wait()
            for below in list(tree.descendants(agent_id)):
                await below.finished.wait()
        if self._flush is not None:
            await self._flush()


class JournaledChanges:
    """The store's records of changes (the tracker's ``ChangeLog``), read once the journal has
    committed what it holds, so a change announced a moment ago is in them."""

    def __init__(self, records: Records, flush: Callable[[], Awaitable[None]]) -> None:
        self._records = records
        self._flush = flush

    async def file_changes(self, agent_ids: Sequence[str]) -> list[FileChange]:
        await self._flush()
        return await self._records.file_changes(agent_ids)


def _files_json(changes: list[FileChange]) -> str:
    return json.dumps([{"path": c.path, "before": blob_text(c.before), "after": blob_text(c.after)} for c in changes])


def _file_change(entry: dict[str, str | None]) -> FileChange:
    return FileChange(str(entry["path"]), parse_blob(entry["before"]), parse_blob(entry["after"]))
