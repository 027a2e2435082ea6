"""A process-count limit per command: a cgroup with ``pids.max``, where this process may make one.

``RLIMIT_NPROC`` does not bind processes whose real user is root (even as uid 1000 inside a user
namespace, their kernel uid is still 0), so the limit that holds is the cgroup ``pids``
controller: v1 (``/sys/fs/cgroup/pids/...``) or v2 with ``pids`` enabled. Each command gets its
own child cgroup; the command's first process joins it before it ``exec`` s bwrap, so everything
it starts is counted. Empty cgroups are removed after the command, and at exit; a killed hub's, by
the next one to start (:func:`sweep_dead_cgroups`, from :mod:`.leftovers`).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import signal
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

__all__ = ["PidsCgroup", "pids_base", "sweep_dead_cgroups"]

_counter = itertools.count(1)
_made: set[Path] = set()


def _own_cgroup() -> tuple[Path | None, Path | None]:
    """(v1 pids cgroup dir, v2 cgroup dir) of this process, where they exist."""
    v1 = v2 = None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            v1 = Path("/sys/fs/cgroup/pids") / path.lstrip("/")
        elif controllers == "":
            for base in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
                if (base / "cgroup.controllers").exists():
                    v2 = base / path.lstrip("/")
                    break
    return v1, v2


@cache
def pids_base() -> Path | None:
    """The cgroup directory under which this process can make limited children, or None."""
    v1, v2 = _own_cgroup()
    for base in (v1, v2):
        if base is None or not (base / "cgroup.procs").exists():
            continue
        if base == v2 and "pids" not in _read(base / "cgroup.subtree_control"):
            continue
        probe = base / f"dispatch-probe-{os.getpid()}"
        try:
            probe.mkdir()
        except OSError:
            continue
        try:
            (probe / "pids.max").write_text("8")
            return base
        except OSError:
            continue
        finally:
            with contextlib.suppress(OSError):
                probe.rmdir()
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


class PidsCgroup:
    """One command's cgroup: made with a limit, joined by the command, removed when empty."""

    def __init__(self, base: Path, limit: int) -> None:
        self.path = base / f"dispatch-{os.getpid()}-{next(_counter)}"
        self.path.mkdir()
        _made.add(self.path)
        (self.path / "pids.max").write_text(str(limit))

    @property
    def procs(self) -> Path:
        """The file a process writes its pid to, to join."""
        return self.path / "cgroup.procs"

    def remove(self, wait_s: float = 2.0) -> bool:
        """Kill whatever is left in it and remove it (blocking up to ``wait_s`` while the killed
        processes exit); False when it could not be removed in that time."""
        deadline = time.monotonic() + wait_s
        while True:
            for pid in _read(self.procs).split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
            try:
                self.path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                return False
            _made.discard(self.path)
            return True


def sweep() -> None:
    """Remove every cgroup this process made that is empty now."""
    for path in list(_made):
        with contextlib.suppress(OSError):
            path.rmdir()
            _made.discard(path)


atexit.register(sweep)

_OWNED = re.compile(r"dispatch-(?:probe-)?(\d+)(?:-\d+)?$")


def sweep_dead_cgroups(base: Path, alive: Callable[[int], bool]) -> None:
    """Remove the command cgroups under ``base`` (``dispatch-<pid>-<n>``) whose owner ``pid`` is
    not ``alive``: left by a hub that was killed; whatever still runs in one is killed first."""
    with contextlib.suppress(OSError):
        for path in base.iterdir():
            owner = _OWNED.match(path.name)
            if owner is None or alive(int(owner.group(1))) or not path.is_dir():
                continue
            for pid in _read(path / "cgroup.procs").split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
