"""``SandboxLauncher``: the shell's :class:`~dispatch.servers.shell.CommandLauncher` that confines
each command with bubblewrap (outer layer) and Landlock (inner layer), with a process limit.

argv of one command, outermost first::

    sh -c 'echo $$ > CGROUP/cgroup.procs && exec "$@"'   (only with pids cgroups: hub > agent > command)
    bwrap NAMESPACES MOUNTS --chdir ROOT --               (only with bubblewrap)
    python -I -S -c LANDLOCK_HELPER --rw ... --          (only with Landlock)
    bash -c COMMAND

Without bubblewrap (``sandbox: landlock``) the helper is the whole sandbox: it drops every
capability, hides what bubblewrap would cover with tmpfs by not granting it (the homes, ``/tmp``,
``/run``, the host's ``/dev/shm``, the data directory, root's secret files), refuses TCP (ABI 4+),
and the always-denied paths in the project are put back after each command (:mod:`.guard`).

A launcher is immutable; :meth:`SandboxLauncher.widened` returns a new one with more grants, and
that is the only way a sandbox grows: by exactly the grants the user approved.

An agent given read paths (``root_reads``) sees only those and its scope of the root: bubblewrap
hides the rest of the root under an empty read-only tmpfs, and Landlock grants reading everywhere
but the root, then those paths. Each command binds only paths that still resolve to themselves:
one swapped for a symlink since the launcher was made (a parent relinking a child's scope) is
left out, not followed.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from dispatch.servers.hublink import Operation
from dispatch.servers.paths import covered_by_any, covers

from . import landlock
from .bwrap import BwrapLayout, private_areas, root_secrets
from .guard import Guard
from .leftovers import private_dir, sweep_leftovers
from .pids import AgentPids, PidsCgroup, ProcessLimits
from .policy import MAX_SCANNED_DIRS, NETWORK, DeniedPaths, Present, scrub_environment
from .probe import SandboxProbe

__all__ = ["Grant", "SandboxLauncher", "landlock_losses"]

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
    """Runs commands confined to ``root`` (read; only ``root_reads`` of it when given) and
    ``write`` (read-write), plus ``grants``."""

    root: Path
    write: tuple[Path, ...]
    probe: SandboxProbe
    grants: tuple[Grant, ...] = ()
    limits: ProcessLimits = field(default_factory=ProcessLimits)
    denied: DeniedPaths = field(default_factory=DeniedPaths.current)
    pids: AgentPids | None = field(default=None, compare=False, repr=False)
    """The agent's pids cgroup (None: no pids cgroup on this machine), shared by widened copies."""
    root_reads: tuple[Path, ...] | None = None
    """The only paths of the root a command sees besides ``write``; None: the whole root."""
    _cgroups: dict[str, PidsCgroup] = field(default_factory=dict[str, PidsCgroup], compare=False, repr=False)
    _walks: dict[str, Present] = field(default_factory=dict[str, Present], compare=False, repr=False)
    """The last walk for always-denied paths (shared by widened copies), refreshed by the next."""

    @classmethod
    def create(
        cls,
        root: Path,
        write: Sequence[Path],
        probe: SandboxProbe,
        limits: ProcessLimits | None = None,
        pids_parent: Path | None = None,
        read: Sequence[Path] | None = None,
    ) -> SandboxLauncher:
        """A launcher for one agent's commands in ``root`` with write access to ``write`` (the root
        itself, or paths inside), seeing only ``read`` of the root besides (None: all of it). Its
        cgroup goes under this process's own hub cgroup, made in ``pids_parent`` (default: the
        probe's base). The first in a process sweeps what killed hubs left (:mod:`.leftovers`)."""
        sweep_leftovers()
        real_root = _real(root)
        writes = tuple(_real(p) for p in write)
        reads = None if read is None else tuple(_real(p) for p in read)
        limits = limits or ProcessLimits()
        parent = pids_parent or probe.pids_cgroup
        pids = AgentPids(parent, limits) if parent is not None else None
        denied = DeniedPaths.current(real_root)
        return cls(real_root, writes, probe, limits=limits, denied=denied, pids=pids, root_reads=reads)

    @property
    def max_processes(self) -> int:
        """How many processes one command may have at once."""
        return self.limits.command

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
        base = [] if self.root in self.write else [self.root] if self.root_reads is None else self.root_reads
        return tuple(dict.fromkeys((*base, *granted)))

    @property
    def hides_root(self) -> bool:
        """Whether commands see only parts of the root (read paths given, the root not writable)."""
        return self.root_reads is not None and self.root not in self.write

    def writable(self, path: Path) -> bool:
        """Whether a command may already write ``path`` on the host (so widening cannot help);
        a private tmpfs does not count: what is written there is gone after the command."""
        return covered_by_any(path, self.write_paths())

    def visible(self, path: Path) -> bool:
        """Whether a command can already see ``path`` as it is on the host (the private areas are
        a tmpfs under bubblewrap, unreadable under Landlock alone)."""
        bound = (*self.read_paths(), *self.write_paths())
        hidden = self.in_private_area(path) or (self.hides_root and covers(self.root, path))
        return covered_by_any(path, bound) or not hidden

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
        together = f" and {self.limits.agent} for all of them together" if self.pids is not None else ""
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
            f" {self.limits.command} processes per command{together}.{lost} A command refused a path or the"
            " network is re-run once the user approves; pass `needs` to `run` to ask up front."
        )

    # ---- the CommandLauncher protocol ----------------------------------------------------------

    def argv(self, command: str, root: Path, present: Present | None = None) -> list[str]:
        """The command's argv; ``present`` is :meth:`denied_present` as it starts (found anew when
        not given)."""
        argv = ["bash", "-c", command]
        if self.probe.landlock_abi:
            argv = [_interpreter(), "-I", "-S", "-c", _helper_code(), *self._landlock_options(), "--", *argv]
        if self.probe.bwrap is not None:
            read = _unmoved(self.read_paths())
            if self.in_private_area(Path(_interpreter())):
                read += (Path(sys.base_prefix),)
            layout = BwrapLayout(
                self.probe.bwrap,
                self.root,
                _unmoved(self.write_paths()),
                read,
                self.network,
                self.probe.userns,
                self.denied,
                self.denied_present() if present is None else present,
                hide_root=self.hides_root,
            )
            argv = layout.argv(argv)
        if self.pids is not None:
            cgroup = self.pids.command()
            self._cgroups[str(cgroup.procs)] = cgroup
            argv = ["/bin/sh", "-c", _JOIN_CGROUP, str(cgroup.procs), *argv]
        return argv

    def _landlock_options(self) -> list[str]:
        write = [*_unmoved(self.write_paths())]
        read: list[Path] = []
        flags: list[str] = []
        if self.probe.has_bwrap:
            write += [*_DEVICES, Path("/dev/shm"), *private_areas(self.denied.home)]  # private mounts inside
            if self.hides_root:
                read = [*_all_but(self.root, [Path("/")]), *_unmoved(self.read_paths())]
        else:  # Landlock alone: hide what bubblewrap would cover by not granting it; give a scratch dir
            write += [*_DEVICES, _scratch()]
            read = _readable(Path("/"), self._hidden())
            if self.hides_root:
                read = _all_but(self.root, read)
            read += [*_unmoved(self.read_paths()), *_unmoved(self.write_paths()), Path(sys.base_prefix)]
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

    def denied_present(self) -> Present:
        """The project's always-denied paths that exist now, at any depth (to mount over, and to
        compare with after a command): the last walk's, refreshed where directories changed."""
        last = self._walks.get("last")
        found = self.denied.present() if last is None else self.denied.refreshed(last)
        self._walks["last"] = found
        return found

    def remove_new_denied(self, before: Present, guarded: Collection[Path] = ()) -> list[str]:
        """Remove the always-denied paths a command created anywhere in the project (a nested
        ``.mcp.json`` or ``.dispatch/``, a ``.git`` file, a git directory's ``commondir``, config
        or hooks, ...), also one put where it moved another away (the moved one stays: the same
        file, unchanged since it was read-only). No mount could protect what did not exist, and a
        git directory stays writable for git's lock files. Paths in ``guarded`` are left alone: a
        :class:`Guard` put them back as they were (as new files, so new identities). One note for
        each; the command has ended, with every process it started."""
        after = self._walks["last"] = self.denied.refreshed(before)
        earlier = set(before.identities().values())  # moved is not new: its content was read-only
        notes: list[str] = []
        for path, identity in sorted(after.identities().items()):
            if identity in earlier or path in guarded or not os.path.lexists(path):
                continue
            why = self.denied.reason(path, "write")
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            notes.append(f"removed {path.relative_to(self.root)}, which the command created: {why}")
        if not after.complete:
            notes.append(
                f"the project has more than {MAX_SCANNED_DIRS} directories: always-denied paths the"
                " command may have created beyond them were not looked for"
            )
        return notes

    def guard(self, present: Present | None = None) -> Guard:
        """Before a command: the always-denied paths it could change (the project's own, and any
        inside the write scope), to put back after it with :meth:`Guard.restore`. Under Landlock
        alone, where nothing is mounted over them, also every one ``present`` found in the write
        scope at any depth (nested repositories' config and hooks, ``.git`` files, ``commondir``...)."""
        writable = self.write_paths()
        inside = [(p, why) for p, why in self.denied.absolute if covered_by_any(p, writable)]
        found = present.identities() if present is not None and not self.probe.has_bwrap else {}
        nested = [(p, self.denied.reason(p, "write") or "always denied") for p in found if covered_by_any(p, writable)]
        return Guard.take(self.root, [*self.denied.in_root(), *inside, *nested], self.root / ".git")

    def release(self, argv: Sequence[str]) -> list[str]:
        """After the command has ended: kill what is left of it and drop its cgroup; a note when
        it ran into a process limit (forks past it failed)."""
        notes: list[str] = []
        for arg in argv[:4]:
            cgroup = self._cgroups.pop(arg, None)
            if cgroup is None or self.pids is None:
                continue
            notes += [f"{limit}; forks past it failed" for limit in self.pids.limits_reached(cgroup)]
            if not self.pids.release(cgroup):
                self._cgroups[arg] = cgroup  # still busy; the next release or the exit sweep retries
        return notes


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


def _unmoved(paths: Iterable[Path]) -> tuple[Path, ...]:
    """The paths that still resolve to themselves (none has become, or gone through, a symlink)."""
    return tuple(p for p in paths if os.path.realpath(p) == str(p))


def _all_but(excluded: Path, tops: Iterable[Path]) -> list[Path]:
    """Paths that cover what ``tops`` cover, less ``excluded`` and what is beneath it: a top that
    holds it is replaced by its entries, each the same way."""
    kept: list[Path] = []
    for top in tops:
        if covers(excluded, top):
            continue
        if not covers(top, excluded):
            kept.append(top)
            continue
        try:
            entries = sorted(os.listdir(top))
        except OSError:
            continue
        kept += _all_but(excluded, (top / name for name in entries))
    return kept


@cache
def _scratch() -> Path:
    """Without bubblewrap: the one writable temp and home directory of this process's commands."""
    return private_dir("scratch")


def _interpreter() -> str:
    """The Python that runs the Landlock helper (the real file, not a venv's symlink)."""
    return os.path.realpath(sys.executable)
