"""Process-count limits, nested: per command, per agent, per hub (:class:`ProcessLimits`), each a
cgroup with ``pids.max``, where this process may make them.

``RLIMIT_NPROC`` does not bind processes whose real user is root (even as uid 1000 inside a user
namespace, their kernel uid is still 0), so the limit that holds is the cgroup ``pids``
controller: v1 (``/sys/fs/cgroup/pids/...``) or v2 with ``pids`` enabled. The controller counts a
process in its cgroup and every ancestor, and refuses a fork that would pass any of their limits::

    BASE/dispatch-PID           this process's commands together (ProcessLimits.total)
        agent-N                 one agent's commands together (ProcessLimits.agent)
            command-N           one command (ProcessLimits.command)

The command's first process joins its cgroup before it ``exec`` s bwrap, so everything it starts
is counted. A command's cgroup is removed after the command, an agent's when its last running
command has ended, the hub's at exit; a killed hub's, by the next one to start
(:func:`sweep_dead_cgroups`, from :mod:`.leftovers`).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["AgentPids", "PidsCgroup", "ProcessLimits", "pids_base", "sweep_dead_cgroups"]

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


@dataclass(frozen=True)
class ProcessLimits:
    """How many processes commands may have at once: all of the hub's, one agent's, one command's."""

    total: int = 1024
    agent: int = 512
    command: int = 256


def _make(path: Path, limit: int) -> Path:
    with contextlib.suppress(FileExistsError):
        path.mkdir()
    _made.add(path)
    (path / "pids.max").write_text(str(limit))
    return path


_hub_lock = threading.Lock()


def hub_cgroup(base: Path, limit: int) -> Path:
    """This process's cgroup under ``base``, every command of its agents inside it (made once)."""
    path = base / f"dispatch-{os.getpid()}"
    with _hub_lock:
        if path not in _made or _read(path / "pids.max").strip() != str(limit):
            _make(path, limit)
    return path


def _refused(path: Path) -> int:
    """How many forks ``pids.events`` of the cgroup at ``path`` counts as refused (kernels differ on
    whether a refusal counts where the fork was tried or where the limit was hit)."""
    for line in _read(path / "pids.events").splitlines():
        key, _, count = line.partition(" ")
        if key == "max" and count.strip().isdigit():
            return int(count)
    return 0


def _full(path: Path) -> bool:
    """Whether the cgroup at ``path`` has had as many processes as its ``pids.max`` (``pids.peak``)."""
    peak, limit = _read(path / "pids.peak").strip(), _read(path / "pids.max").strip()
    return peak.isdigit() and limit.isdigit() and int(peak) >= int(limit)


class PidsCgroup:
    """One command's cgroup: made with a limit, joined by the command, removed when empty."""

    def __init__(self, parent: Path, limit: int) -> None:
        self.path = _make(parent / f"command-{next(_counter)}", limit)
        self.refused_before = (_refused(parent), _refused(parent.parent))
        """Forks its agent's and its hub's limits had refused when it started."""

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


class AgentPids:
    """One agent's cgroup under the hub's (``parent``): made when one of its commands starts,
    removed when its last running command has ended; thread-safe (commands end in worker threads)."""

    def __init__(self, parent: Path, limits: ProcessLimits) -> None:
        self.parent = parent
        self.limits = limits
        self.path: Path | None = None
        self._running = 0
        self._lock = threading.Lock()

    def command(self) -> PidsCgroup:
        """A new command's cgroup inside the agent's (making the agent's first if need be)."""
        with self._lock:
            if self.path is None:
                hub = hub_cgroup(self.parent, self.limits.total)
                self.path = _make(hub / f"agent-{next(_counter)}", self.limits.agent)
            cgroup = PidsCgroup(self.path, self.limits.command)
            self._running += 1
            return cgroup

    def limits_reached(self, cgroup: PidsCgroup) -> list[str]:
        """Which limit an ended command's forks ran into, if one was refused: its own, its agent's
        (its commands together) or the hub's (every agent's)."""
        limits, agent = self.limits, cgroup.path.parent
        hub = agent.parent
        refused = _refused(cgroup.path) or (_refused(agent), _refused(hub)) > cgroup.refused_before
        if not refused:
            return []
        if _full(cgroup.path):
            return [f"the command reached its limit of {limits.command} processes (limits.processes.command)"]
        if _full(agent):
            return [f"this agent's commands together reached {limits.agent} processes (limits.processes.agent)"]
        if _full(hub):
            return [f"the commands of every agent together reached {limits.total} processes (limits.processes.total)"]
        return ["the command reached a process limit (limits.processes)"]

    def release(self, cgroup: PidsCgroup) -> bool:
        """Remove an ended command's cgroup (False when it could not be, yet), and the agent's once
        no command of it runs."""
        if not cgroup.remove():
            return False
        with self._lock:
            self._running -= 1
            if self._running == 0 and self.path is not None:
                with contextlib.suppress(OSError):
                    self.path.rmdir()
                    _made.discard(self.path)
                    self.path = None
        return True


def sweep() -> None:
    """Remove every cgroup this process made that is empty now (the innermost first)."""
    for path in sorted(_made, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()
            _made.discard(path)


atexit.register(sweep)

_OWNED = re.compile(r"dispatch-(?:probe-)?(\d+)(?:-\d+)?$")


def sweep_dead_cgroups(base: Path, alive: Callable[[int], bool]) -> None:
    """Remove the cgroups under ``base`` (``dispatch-<pid>`` with its agents' and commands' inside,
    ``dispatch-probe-<pid>``) whose owner ``pid`` is not ``alive``: left by a hub that was killed;
    whatever still runs in one is killed first, and the innermost go first (a cgroup with children
    cannot be removed)."""
    with contextlib.suppress(OSError):
        for path in base.iterdir():
            owner = _OWNED.match(path.name)
            if owner is None or alive(int(owner.group(1))) or not path.is_dir():
                continue
            tree = [Path(folder) for folder, _, _ in os.walk(path)]
            for cgroup in tree:
                for pid in _read(cgroup / "cgroup.procs").split():
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), signal.SIGKILL)
            for cgroup in sorted(tree, key=lambda p: len(p.parts), reverse=True):
                _remove_when_empty(cgroup)


def _remove_when_empty(cgroup: Path, wait_s: float = 2.0) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
