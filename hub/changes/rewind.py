"""Putting files back: what an agent (and its descendants) changed, to its state before.

:func:`rewind_files` folds the changes per file (its first state and its last), checks that each
file is still as the agents left it, and writes the first states back (a file they made is
removed). A file someone else changed since (the user, another agent) refuses the whole rewind,
naming the files, unless forced. What it found and what it restored is returned, so a rewind is
undone the same way: its own record, rewound in turn.
"""

from __future__ import annotations

from collections.abc import Sequence

from dispatch.hub.changes.shadow import FileChange, ShadowRepo, net_changes
from dispatch.hub.errors import ConflictError

__all__ = ["rewind_files"]

_SHOWN = 10


def rewind_files(repo: ShadowRepo, changes: Sequence[FileChange], *, force: bool, what: str) -> list[FileChange]:
    """Restore each file of ``changes`` (in the order made) to its state before the first; returns
    per file the state found (``before``) and the one restored (``after``). Raises ConflictError
    naming the files changed since the last of ``changes``, unless ``force``. Blocks: run it in a
    worker thread."""
    net = net_changes(changes)
    if not net:
        return []
    now = repo.current([c.path for c in net])
    changed = [c.path for c in net if now[c.path] != c.after]
    if changed and not force:
        shown = ", ".join(changed[:_SHOWN]) + (f" and {len(changed) - _SHOWN} more" if len(changed) > _SHOWN else "")
        raise ConflictError(
            f"not rewound: {shown} changed since {what} last wrote {'them' if len(changed) > 1 else 'it'}; "
            'rewind with force (API: {"force": true}, CLI: --force) to overwrite'
        )
    repo.restore({c.path: c.before for c in net})
    return [FileChange(c.path, now[c.path], c.before) for c in net]
