"""``SandboxLauncher``: the shell's :class:`~dispatch.servers.shell.CommandLauncher` that confines
each command with bubblewrap (outer layer) and Landlock (inner layer), with a process limit.

argv of one command, outermost first::

    sh -c 'echo $$ > CGROUP/cgroup.procs && exec "$@"'   (only with a pids cgroup)
    bwrap NAMESPACES MOUNTS --chdir ROOT --               (only with bubblewrap)
    python -I -S -c LANDLOCK_HELPER --rw ... --          (only with Landlock)
    bash -c COMMAND

Without bubblewrap (``sandbox: landlock``) the helper is the whole sandbox: it drops every
capability, hides what bubblewrap would cover with tmpfs by not granting it (the homes, ``/tmp``,
``/run``, the host's ``/dev/shm``, the data directory, root's secret files), refuses TCP (ABI 4+),
and the always-denied paths in the project are put back after each command (:mod:`.guard`).

A launcher is immutable; :meth:`SandboxLauncher.widened` returns a new one with more grants, and
that is the only way a sandbox grows: by exactly the grants the user approved.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from dispatch.servers.hublink import Operation
from dispatch.servers.paths import covered_by_any, covers

from . import landlock
from .bwrap import BwrapLayout, private_areas, root_secrets
from .guard import Guard
from .leftovers import private_dir, sweep_leftovers
from .pids import PidsCgroup
from .policy import NETWORK, PROJECT_DENIED, DeniedPaths, scrub_environment
from .probe import SandboxProbe

__all__ = ["DEFAULT_MAX_PROCESSES", "Grant", "SandboxLauncher", "landlock_losses"]

DEFAULT_MAX_PROCESSES = 256
_JOIN_CGROUP = 'echo $$ > "$0" && exec "$@"'


@dataclass(frozen=True)
class Grant:
    """Something the user let one agent's commands do: a path (absolute) or :data:`NETWORK`."""

    path: str
    op: Operation

    def describe(self) -> str:
        return "network access" if self.path == NETWORK else f"{self.op} access to {self.path}"


@cache
def _helper_code() -> str:
    return Path(landlock.__file__).read_text()


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


@dataclass(frozen=True)
class SandboxLauncher:
    """Runs commands confined to ``root`` (read) and ``write`` (read-write), plus ``grants``."""

    root: Path
    write: tuple[Path, ...]
    probe: SandboxProbe
    grants: tuple[Grant, ...] = ()
    max_processes: int = DEFAULT_MAX_PROCESSES
    denied: DeniedPaths = field(default_factory=DeniedPaths.current)
    _cgroups: dict[str, PidsCgroup] = field(default_factory=dict[str, PidsCgroup], compare=False, repr=False)

    @classmethod
    def create(
        cls, root: Path, write: Sequence[Path], probe: SandboxProbe, max_processes: int = DEFAULT_MAX_PROCESSES
    ) -> SandboxLauncher:
        """A launcher for ``root`` with write access to ``write`` (the root itself, or paths inside).
        The first in a process sweeps what killed hubs left (:mod:`.leftovers`)."""
        sweep_leftovers()
        real_root = _real(root)
        writes = tuple(_real(p) for p in write)
        return cls(real_root, writes, probe, max_processes=max_processes, denied=DeniedPaths.current(real_root))

    # ---- what it allows ------------------------------------------------------------------------

    @property
    def network(self) -> bool:
        return any(g.path == NETWORK for g in self.grants)

    def write_paths(self) -> tuple[Path, ...]:
        """Where commands may write on the host: the scope, then write grants."""
        granted = (_real(Path(g.path)) for g in self.grants if g.op == "write" and g.path != NETWORK)
        return tuple(dict.fromkeys((*self.write, *granted)))

    def read_paths(self) -> tuple[Path, ...]:
        """Bound read-only: the root (when not writable as a whole) and read/execute grants."""
        granted = [_real(Path(g.path)) for g in self.grants if g.op != "write" and g.path != NETWORK]
        base = [] if self.root in self.write else [self.root]
        return tuple(dict.fromkeys((*base, *granted)))

    def writable(self, path: Path) -> bool:
        """Whether a command may already write ``path`` on the host (so widening cannot help);
        a private tmpfs does not count: what is written there is gone after the command."""
        return covered_by_any(path, self.write_paths())

    def visible(self, path: Path) -> bool:
        """Whether a command can already see ``path`` as it is on the host (the private areas are
        a tmpfs under bubblewrap, unreadable under Landlock alone)."""
        return covered_by_any(path, (*self.read_paths(), *self.write_paths())) or not self.in_private_area(path)

    def in_private_area(self, path: Path) -> bool:
        return covered_by_any(path, private_areas(self.denied.home))

    def widened(self, grants: Iterable[Grant]) -> SandboxLauncher:
        """A launcher that also allows ``grants`` (and shares this one's bookkeeping)."""
        extra = tuple(g for g in grants if g not in self.grants)
        return replace(self, grants=self.grants + extra) if extra else self

    def describe(self) -> str:
        """One paragraph for the agent's system prompt, naming the mode in force."""
        scope = ", ".join(str(p) for p in self.write) or "nowhere (read-only)"
        net = "the network is on (granted)" if self.network else "no network"
        if self.probe.has_bwrap:
            mode = f"Shell commands run in a sandbox ({self.probe.layers()}; `sandbox: auto`)"
            scratch = "a private /tmp and home that vanish after each command"
        else:
            mode = f"Shell commands run under Landlock alone (`sandbox: landlock`, ABI {self.probe.landlock_abi})"
            scratch = "a scratch $HOME and $TMPDIR kept between commands"
            if not self.network and self.probe.landlock_abi >= landlock.NETWORK_ABI:
                net = "no TCP connection or listening port, not even on localhost"
        lost = (
            "" if self.probe.has_bwrap else f" Compared with bubblewrap this mode loses: {landlock_losses(self.probe)}."
        )
        return (
            f"{mode}: they may write only in {scope} (plus {scratch}), {net}, at most"
            f" {self.max_processes} processes.{lost} A command refused a path or the network is re-run once"
            " the user approves; pass `needs` to `run` to ask up front."
        )

    # ---- the CommandLauncher protocol ----------------------------------------------------------

    def argv(self, command: str, root: Path) -> list[str]:
        argv = ["bash", "-c", command]
        if self.probe.landlock_abi:
            argv = [_interpreter(), "-I", "-S", "-c", _helper_code(), *self._landlock_options(), "--", *argv]
        if self.probe.bwrap is not None:
            read = self.read_paths()
            if self.in_private_area(Path(_interpreter())):
                read += (Path(sys.base_prefix),)
            layout = BwrapLayout(
                self.probe.bwrap, self.root, self.write_paths(), read, self.network, self.probe.userns, self.denied
            )
            argv = layout.argv(argv)
        if self.probe.pids_cgroup is not None:
            cgroup = PidsCgroup(self.probe.pids_cgroup, self.max_processes)
            self._cgroups[str(cgroup.procs)] = cgroup
            argv = ["/bin/sh", "-c", _JOIN_CGROUP, str(cgroup.procs), *argv]
        return argv

    def _landlock_options(self) -> list[str]:
        write = [*self.write_paths()]
        read: list[Path] = []
        flags: list[str] = []
        if self.probe.has_bwrap:
            write += [*_DEVICES, Path("/dev/shm"), *private_areas(self.denied.home)]  # private mounts inside
        else:  # Landlock alone: hide what bubblewrap would cover by not granting it; give a scratch dir
            write += [*_DEVICES, _scratch()]
            read = [*_readable(Path("/"), self._hidden()), *self.read_paths(), *self.write_paths()]
            read.append(Path(sys.base_prefix))
            flags = [] if self.network else ["--no-network"]
        options = [arg for path in write for arg in ("--rw", str(path))]
        options += [arg for path in read for arg in ("--ro", str(path))]
        return [*options, "--nproc", str(self.max_processes), *flags]

    def _hidden(self) -> list[Path]:
        """Without bubblewrap, what no read rule may cover (what its tmpfs mounts and hides cover)."""
        hidden = [*private_areas(self.denied.home), Path("/dev/shm"), *(p for p, _ in self.denied.absolute)]
        return hidden + (root_secrets() if os.geteuid() == 0 else [])

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        env = scrub_environment(base)
        env.pop("XDG_RUNTIME_DIR", None)  # under /run, which is not there (or not readable)
        if self.probe.has_bwrap:
            env["HOME"] = str(self.denied.home)  # a private tmpfs at the same path
            env["TMPDIR"] = "/tmp"
        else:
            scratch = _scratch()
            env["HOME"] = env["TMPDIR"] = str(scratch)
        return env

    def guard(self) -> Guard:
        """Before a command: the always-denied paths it could change (the project's own, and any
        inside the write scope), to put back after it with :meth:`Guard.restore`."""
        inside = [(p, why) for p, why in self.denied.absolute if covered_by_any(p, self.write_paths())]
        own = list(zip(self.denied.in_root(), (why for _, why in PROJECT_DENIED), strict=True))
        return Guard.take(self.root, [*own, *inside], self.root / ".git")

    def release(self, argv: Sequence[str]) -> None:
        """After the command has ended: kill what is left of it and drop its cgroup."""
        for arg in argv[:4]:
            cgroup = self._cgroups.pop(arg, None)
            if cgroup is not None and not cgroup.remove():
                self._cgroups[arg] = cgroup  # still busy; the next release or the exit sweep retries


_DEVICES = tuple(Path("/dev", name) for name in ("null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts"))


def landlock_losses(probe: SandboxProbe) -> str:
    """What commands under Landlock alone lack, compared with bubblewrap (for the prompt, doctor,
    the shell's refusal under ``auto``)."""
    net = (
        "UDP is not refused (TCP is)"
        if probe.landlock_abi >= landlock.NETWORK_ABI
        else f"the network is open (Landlock ABI {landlock.NETWORK_ABI}+ refuses TCP; this kernel has"
        f" {probe.landlock_abi or 'none'})"
    )
    return (
        "no namespaces, so the host's processes and network interfaces are visible; the project's"
        " .git/hooks, .git/config, .mcp.json and .dispatch/ can be read, and changed while a command"
        " runs (they are put back after it); a root hub's commands keep uid 0, without capabilities,"
        f" so the root-owned files they can see are theirs; {net}; the scratch folder is not size-capped"
    )


def _readable(top: Path, hidden: Sequence[Path]) -> list[Path]:
    """The paths to grant read beneath so that all of ``top`` but ``hidden`` is readable: ``top``
    itself when nothing hidden lies beneath it, else its entries, recursively (links skipped: a
    rule on one would cover its target; their targets are granted where they are)."""
    if covered_by_any(top, hidden):
        return []
    if not any(covers(top, h) for h in hidden):
        return [top]
    try:
        names = sorted(os.listdir(top))
    except OSError:
        return []
    found: list[Path] = []
    for name in names:
        child = top / name
        if not child.is_symlink():
            found += _readable(child, hidden)
    return found


@cache
def _scratch() -> Path:
    """Without bubblewrap: the one writable temp and home directory of this process's commands."""
    return private_dir("scratch")


def _interpreter() -> str:
    """The Python that runs the Landlock helper (the real file, not a venv's symlink)."""
    return os.path.realpath(sys.executable)
