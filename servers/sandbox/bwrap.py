"""The bubblewrap command line for one shell command: what the command may see and change.

Layout, in mount order (later mounts cover earlier ones):

1. ``/`` read-only; a fresh ``/dev`` and ``/proc`` (the command's own pid namespace);
2. private, size-capped tmpfs over ``/tmp``, ``/var/tmp``, ``/run``, ``/home``, ``/root`` and
   ``$HOME``: other users' files, the user's home and the host's unix sockets (docker, dbus, agents)
   are simply not there;
3. for an agent that sees only some paths of the root, an empty tmpfs over the root; read grants
   (and those paths) bound read-only, then the project root (or the agent's write scope inside it)
   and each write grant bound read-write; every writable ``.git`` directory found in the project
   is bound onto itself so that it cannot be renamed away and replaced (it stays writable: git
   creates its lock files, ``index.lock``, ``HEAD.lock``, in it); the tmpfs over the root is then
   made read-only;
4. the always-denied paths that exist and would be visible (:meth:`.DeniedPaths.present`, at any
   depth): the unreadable ones hidden, an empty read-only tmpfs over a directory, an empty
   read-only file over a file; the writable ones that are only unwritable (a git directory's
   entries outside git's working data, ``.git`` files) bound read-only onto themselves. A mount
   point cannot be renamed or removed either.

Namespaces: user (a non-zero uid, user namespaces disabled inside), pid, ipc, uts, cgroup, and
net unless the network is granted; ``--cap-drop ALL`` when started as root; ``--die-with-parent``
and ``--new-session``. The environment is whatever bwrap itself is started with (it must already
be scrubbed: ``/proc/1/environ`` inside shows it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from dispatch.servers.paths import covered_by_any

from .leftovers import private_dir
from .policy import DeniedPaths, Present

__all__ = ["BwrapLayout", "empty_file", "private_areas", "root_secrets"]

TMP_SIZE = 512 * 1024 * 1024
HOME_SIZE = 128 * 1024 * 1024
SANDBOX_UID = 1000
RESOLVER = Path("/run/systemd/resolve")
"""Where /etc/resolv.conf often points: bound back when the network is granted."""
ROOT_SECRETS = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers")
"""Files only root may read; hidden when the hub runs as root (the sandbox's files are root's)."""


@cache
def empty_file() -> Path:
    """A read-only empty file to mount over files that must not be seen."""
    path = private_dir("sandbox") / "empty"
    path.touch(mode=0o444)
    return path


def private_areas(home: Path) -> list[Path]:
    """The directories that get a private tmpfs, parents before children."""
    areas = [Path("/tmp"), Path("/var/tmp"), Path("/run"), Path("/home"), Path("/root"), home]
    found = {p for p in areas if p.is_dir()} | {home}
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


def root_secrets() -> list[Path]:
    """The files only root may read that exist here (hidden from a root hub's commands)."""
    found = [Path(p) for p in ROOT_SECRETS]
    ssh = Path("/etc/ssh")
    if ssh.is_dir():
        found += sorted(ssh.glob("ssh_host_*_key"))
    return [p for p in found if p.exists()]


@dataclass(frozen=True)
class BwrapLayout:
    """Everything the bwrap argv depends on; paths absolute and resolved."""

    bwrap: str
    root: Path
    write: tuple[Path, ...]
    read: tuple[Path, ...] = ()
    network: bool = False
    userns: bool = True
    denied: DeniedPaths = field(default_factory=DeniedPaths.current)
    present: Present = field(default_factory=Present)
    """The project's always-denied paths as the command starts."""
    hide_root: bool = False
    """Whether only the bound paths of the root are seen (an empty tmpfs under them)."""

    def argv(self, inner: Sequence[str]) -> list[str]:
        """``bwrap ... -- INNER...``."""
        return [self.bwrap, *self._namespaces(), *self._mounts(), "--chdir", str(self.root), "--", *inner]

    def _namespaces(self) -> list[str]:
        args: list[str] = []
        if self.userns:
            uid = SANDBOX_UID if os.geteuid() == 0 else os.getuid()
            gid = SANDBOX_UID if os.geteuid() == 0 else os.getgid()
            args += ["--unshare-user", "--uid", str(uid), "--gid", str(gid), "--disable-userns"]
        if os.geteuid() == 0:
            args += ["--cap-drop", "ALL"]
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not self.network:
            args.append("--unshare-net")
        return [*args, "--die-with-parent", "--new-session"]

    def _mounts(self) -> list[str]:
        args = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        areas = private_areas(self.denied.home)
        for area in areas:
            size = TMP_SIZE if area.is_relative_to("/tmp") or area == Path("/var/tmp") else HOME_SIZE
            args += ["--size", str(size), "--tmpfs", str(area)]
        if self.hide_root:
            args += ["--tmpfs", str(self.root)]
            areas = [*areas, self.root]
        read = [*self.read, *([RESOLVER] if self.network and RESOLVER.is_dir() else [])]
        for path in read:
            if path.exists():
                args += ["--ro-bind", str(path), str(path)]
        for path in self.write:
            if path.exists():
                args += ["--bind", str(path), str(path)]
        args += self._protected(areas)
        if self.hide_root:
            args += ["--remount-ro", str(self.root)]
        return args

    def _protected(self, areas: Sequence[Path]) -> list[str]:
        """Git directories pinned in place, their non-working entries read-only, and the
        always-denied paths hidden (where the command could otherwise see them)."""
        args: list[str] = []
        for git in self.present.git_dirs:
            if covered_by_any(git, self.write):
                args += ["--bind", str(git), str(git)]
        for path in self.present.frozen:
            if covered_by_any(path, self.write) and not path.is_symlink():
                args += ["--ro-bind", str(path), str(path)]
        bound = (*self.read, *self.write)
        for path in self._hidden():
            if covered_by_any(path, bound) or not covered_by_any(path, areas):
                args += self._hide(path)
        return args

    def _hidden(self) -> list[Path]:
        paths = [p for p, _ in self.denied.absolute] + list(self.present.hidden)
        if os.geteuid() == 0:
            paths += root_secrets()
        return [p for p in dict.fromkeys(paths) if p.exists() and not p.is_symlink()]

    @staticmethod
    def _hide(path: Path) -> list[str]:
        if path.is_dir():
            return ["--size", "4096", "--tmpfs", str(path), "--remount-ro", str(path)]
        return ["--ro-bind", str(empty_file()), str(path)]
