"""What a hub killed with ``kill -9`` leaves behind, and its sweep at the next start.

Each process names what it makes for the sandbox after itself: its temp folders
``dispatch-<kind>-<pid>-*`` (:func:`private_dir`) and its per-command cgroups
``dispatch-<pid>-<n>`` (:class:`~.pids.PidsCgroup`). Both are removed at a normal exit; after a
kill they stay. :func:`sweep_leftovers` (run once per process, when its first sandbox is made)
removes those whose owner pid is no longer alive, killing what is left in such a cgroup, and
keeps those of every running process, another hub's included.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import tempfile
from functools import cache
from pathlib import Path

from .pids import pids_base, sweep_dead_cgroups

__all__ = ["alive", "private_dir", "sweep_leftovers"]

_OWNED = re.compile(r"dispatch-(?:sandbox|scratch)-(\d+)-")


def alive(pid: int) -> bool:
    """Whether a process with this pid exists now."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def private_dir(kind: str) -> Path:
    """A new temp folder of this process (``dispatch-<kind>-<pid>-*``), removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix=f"dispatch-{kind}-{os.getpid()}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@cache
def sweep_leftovers() -> None:
    """Remove the sandbox's temp folders and cgroups of processes that are gone (once per process)."""
    temp = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for folder in temp.iterdir():
            owner = _OWNED.match(folder.name)
            if owner and not alive(int(owner.group(1))) and folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)
    base = pids_base()
    if base is not None:
        sweep_dead_cgroups(base, alive)
