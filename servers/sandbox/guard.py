"""After each command, the always-denied paths it could reach are as they were before it.

Bubblewrap mounts over those that exist, but nothing can mount over one that does not exist yet,
and under Landlock alone nothing covers them at all (a ruleset grants rights beneath a directory
and cannot take some back). So before a command the launcher takes a :class:`Guard` of them: the
bytes, modes and links of each (``.git/hooks``, ``.git/config``, ``.mcp.json``, ``.dispatch/``,
and any other always-denied path inside the write scope), with ``.git`` itself held open. After
it, :meth:`Guard.restore` puts back what the command changed: ``.git`` moved back where it was
renamed away (a ``.git`` file or link put in its place removed), a changed file or tree rewritten
as it was, a new one removed; one note for each.

Every step goes through directory descriptors opened without following links, so a link the
command planted cannot turn a restore into a write somewhere else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Guard"]

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class _Entry:
    """One file, link, directory (with its entries, sorted) or other node, as it was."""

    kind: str
    mode: int
    data: bytes = b""
    children: tuple[tuple[str, _Entry], ...] = ()


@contextlib.contextmanager
def _parent(path: Path) -> Generator[int | None]:
    """A descriptor of ``path``'s parent reached from ``/`` without following any link; None when
    some part is missing or is not a real directory."""
    fd = os.open("/", _DIR)
    try:
        for part in path.parent.parts[1:]:
            try:
                child = os.open(part, _DIR, dir_fd=fd)
            except OSError:
                yield None
                return
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _read(dir_fd: int, name: str) -> _Entry | None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return _Entry("link", 0, os.readlink(name, dir_fd=dir_fd).encode())
    if stat.S_ISREG(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as file:
            return _Entry("file", mode, file.read()) if stat.S_ISREG(os.fstat(fd).st_mode) else _Entry("other", mode)
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, _DIR, dir_fd=dir_fd)
        try:
            children = ((child, _read(fd, child)) for child in sorted(os.listdir(fd)))
            return _Entry("dir", mode, children=tuple((n, e) for n, e in children if e is not None))
        finally:
            os.close(fd)
    return _Entry("other", mode)


def _remove(dir_fd: int, name: str) -> None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _write(dir_fd: int, name: str, entry: _Entry) -> None:
    if entry.kind == "link":
        os.symlink(entry.data.decode(), name, dir_fd=dir_fd)
    elif entry.kind == "file":
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as file:
            file.write(entry.data)
            os.fchmod(fd, entry.mode)
    elif entry.kind == "dir":
        os.mkdir(name, 0o700, dir_fd=dir_fd)
        fd = os.open(name, _DIR, dir_fd=dir_fd)
        try:
            for child, inner in entry.children:
                _write(fd, child, inner)
            os.fchmod(fd, entry.mode)
        finally:
            os.close(fd)
    # other nodes (a FIFO, a socket) are not recreated


def _at(path: Path, action: Callable[[int, str], _Entry | None]) -> _Entry | None:
    with _parent(path) as fd:
        return None if fd is None else action(fd, path.name)


_GIT_FILE = "a .git file or link names a git directory, whose hooks run on the next commit"


@dataclass
class Guard:
    """The always-denied paths a command could reach, as they were before it; restore them once."""

    paths: dict[Path, _Entry | None]
    reasons: dict[Path, str]
    root: Path
    """Paths inside it are named relative to it in the notes."""
    git: Path | None = None
    _git_was: _Entry | None = None
    """``.git`` when it is not a directory (a worktree's or a submodule's file), or None."""
    _git_fd: int | None = None
    _git_id: tuple[int, int] | None = None

    @classmethod
    def take(cls, root: Path, paths: Sequence[tuple[Path, str]], git: Path | None = None) -> Guard:
        """A guard of ``paths`` (absolute, resolved; with why each is denied), and of the ``git``
        directory (the project's ``.git``), held open to find it again if it is renamed."""
        guard = cls({p: _at(p, _read) for p, _ in paths}, dict(paths), root, git)
        if git is not None:
            with contextlib.suppress(OSError):
                guard._git_fd = os.open(git, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                st = os.fstat(guard._git_fd)
                guard._git_id = (st.st_dev, st.st_ino)
            if guard._git_fd is None:
                guard._git_was = _at(git, _read)
        return guard

    def restore(self) -> list[str]:
        """Put back what changed (see the module); the notes say what was done. Call once."""
        notes: list[str] = []
        try:
            if self.git is not None:
                notes += self._restore_git(self.git)
            for path, was in self.paths.items():
                notes += self._restore(path, was)
        finally:
            if self._git_fd is not None:
                os.close(self._git_fd)
                self._git_fd = None
        return notes

    def _restore(self, path: Path, was: _Entry | None) -> list[str]:
        with _parent(path) as fd:
            if fd is None:
                return []  # its directory is gone (or is not one): nothing there can run
            now = _read(fd, path.name)
            if now == was:
                return []
            _remove(fd, path.name)
            if was is not None:
                _write(fd, path.name, was)
        done = "removed" if was is None else "restored"
        what = "created" if was is None else "removed" if now is None else "changed"
        return [f"{done} {self._name(path)}, which the command {what}: it is always denied ({self.reasons[path]})"]

    def _name(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def _restore_git(self, git: Path) -> list[str]:
        """``.git`` renamed away: the original moved back (over what took its place). A ``.git``
        that is not a directory (a file or link naming another git directory) as it was."""
        with _parent(git) as fd:
            if fd is None:
                return []
            if self._git_fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(git.name, dir_fd=fd, follow_symlinks=False)
                    if (st.st_dev, st.st_ino) == self._git_id:
                        return []
                where = os.readlink(f"/proc/self/fd/{self._git_fd}")
                with contextlib.suppress(OSError):
                    moved = os.stat(where, follow_symlinks=False)
                    if (moved.st_dev, moved.st_ino) == self._git_id:
                        _remove(fd, git.name)
                        os.rename(where, git.name, dst_dir_fd=fd)
                        return [f"moved {self._name(git)} back from {where}, where the command had moved it"]
            now = _read(fd, git.name)
            if now is None or now.kind == "dir" or now == self._git_was:
                return []  # a directory's hooks and config are guarded on their own
            _remove(fd, git.name)
            if self._git_was is not None:
                _write(fd, git.name, self._git_was)
        done = "restored" if self._git_was else "removed"
        return [f"{done} {self._name(git)}, which the command made a file or link: {_GIT_FILE}"]
