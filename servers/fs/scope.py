"""Where one ``fs`` server may read and write, enforced by the kernel: every path is opened with
``openat2(root_fd, path, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`` and then used only through the
file descriptor it gave, so nothing can be swapped between a check and its use.

A path that leads out of the root (``..``, an absolute path, a symlink; ``EXDEV`` from the kernel)
becomes an *outside* path: refused at once when always denied (:mod:`.sandbox.policy`), otherwise
put to ``ask`` (the agent's ``HubLink.request_access``, which the hub answers by the agent's
identity). Once granted it is opened beneath its own directory the same way, and refused if it
changed meanwhile. A server without ``ask`` (standalone over stdio) refuses every outside path.
Only regular files are read or written (never a FIFO or a device), through a size cap.
"""

from __future__ import annotations

import errno
import os
import stat
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio.to_thread

from .._base import ToolError
from ..hublink import AccessDecision, Operation
from ..sandbox.openat2 import RESOLVE_NO_SYMLINKS, SAFE, fd_path, openat2
from ..sandbox.policy import DeniedPaths

__all__ = ["Ask", "FsScope", "Opened", "Slot", "type_name"]

Ask = Callable[[str, Operation, str], Awaitable[AccessDecision]]
Kind = Literal["file", "dir", "any"]


@dataclass
class Opened:
    """An open file or directory, and where it is."""

    fd: int
    real: Path
    is_dir: bool
    base_fd: int
    """The directory it was opened beneath (the root, or a granted outside directory)."""
    rel: str
    """Its path beneath ``base_fd``."""

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Slot:
    """Where a write goes: a name in an open directory (the write itself renames into place)."""

    dir_fd: int
    dir_real: Path
    name: str

    @property
    def real(self) -> Path:
        return self.dir_real / self.name

    def close(self) -> None:
        os.close(self.dir_fd)


@dataclass(frozen=True)
class _Escape:
    """A path that led out of the root, resolved to where it leads."""

    target: Path


def type_name(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


class FsScope:
    """The root and write paths of one ``fs`` server, and the opening of paths beneath them."""

    def __init__(
        self,
        root: Path,
        write: Sequence[Path] | None = None,
        ask: Ask | None = None,
        denied: DeniedPaths | None = None,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise ValueError(f"project root {str(root)!r} is not a directory")
        paths = [self.root] if write is None else [Path(os.path.realpath(self.root / p)) for p in write]
        for given, resolved in zip(write or [], paths, strict=False):
            if not self.contains(resolved):
                raise ValueError(f"write path {str(given)!r} resolves to '{resolved}', outside '{self.root}'")
        self.write: tuple[Path, ...] = tuple(paths)
        self.ask = ask
        self.denied = denied or DeniedPaths.current(self.root)
        self.root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        weakref.finalize(self, os.close, self.root_fd)

    def contains(self, resolved: Path) -> bool:
        """Whether an already resolved path is the root or inside it."""
        return resolved.is_relative_to(self.root)

    def shown(self, real: Path) -> str:
        """A resolved path as the model should see it: root-relative inside, absolute outside."""
        return real.relative_to(self.root).as_posix() if self.contains(real) else str(real)

    def readable(self, path: str) -> Path:
        """``path`` resolved, if it is inside the root and not always denied (for a server that
        hands the path to another program, such as a language server); never asks."""
        lexical = Path(os.path.realpath(self.root / path))
        if not lexical.exists() and self.contains(lexical):  # the other program says "not found"
            self._refuse_denied(path, lexical, "read")
            return lexical
        found = self._open_inside(path, "any")
        if isinstance(found, _Escape) and self.contains(found.target):  # an absolute symlink inside
            found = self._open_inside(str(found.target), "any")
        if isinstance(found, _Escape):
            raise ToolError(f"refused: {path!r} resolves to '{found.target}', outside the project root '{self.root}'")
        found.close()
        return found.real

    # ---- reading ---------------------------------------------------------------------------

    async def open(self, path: str, kind: Kind, why: str) -> Opened:
        """Open ``path`` for reading (a regular file, a directory, or either)."""
        found = await anyio.to_thread.run_sync(self._open_inside, path, kind)
        if isinstance(found, _Escape) and self.contains(found.target):  # an absolute symlink inside
            found = await anyio.to_thread.run_sync(self._open_inside, str(found.target), kind)
        if isinstance(found, Opened):
            return found
        if self.contains(found.target):
            raise ToolError(f"refused: {path!r} changed while it was being opened; try again")
        target = await self._granted(path, found.target, "read", why)
        return await anyio.to_thread.run_sync(self._open_outside, path, target, kind)

    def _relative(self, path: str) -> str | None:
        """``path`` relative to the root, or None for an absolute path elsewhere."""
        if "\0" in path:
            raise ToolError(f"refused: {path!r} is not a usable path (it contains a NUL byte)")
        if not os.path.isabs(path):
            return path or "."
        if path == str(self.root) or path.startswith(f"{self.root}/"):
            return os.path.relpath(path, self.root)
        return None

    def _open_inside(self, path: str, kind: Kind) -> Opened | _Escape:
        rel = self._relative(path)
        if rel is None:
            return _Escape(Path(os.path.realpath(path)))
        try:
            fd = openat2(self.root_fd, rel, os.O_PATH)
        except OSError as error:
            if error.errno == errno.EXDEV:
                return _Escape(Path(os.path.realpath(self.root / rel)))
            raise self._os_error(path, error) from error
        return self._reopen(path, fd, kind, self.root_fd, rel)

    def _open_outside(self, path: str, target: Path, kind: Kind) -> Opened:
        base_fd = self._open_dir_exactly(path, target.parent)
        try:
            fd = openat2(base_fd, target.name or ".", os.O_PATH)
            opened = self._reopen(path, fd, kind, base_fd, target.name or ".")
        except OSError as error:
            os.close(base_fd)
            raise self._os_error(path, error) from error
        except BaseException:
            os.close(base_fd)
            raise
        if opened.real != target:
            opened.close()
            os.close(base_fd)
            raise ToolError(f"refused: {path!r} changed while it was being opened (now '{opened.real}'); try again")
        return opened

    def _reopen(self, path: str, path_fd: int, kind: Kind, base_fd: int, rel: str) -> Opened:
        """From an ``O_PATH`` descriptor: check what it is and where, then open it for reading."""
        try:
            real = fd_path(path_fd)
            self._refuse_denied(path, real, "read")
            mode = os.fstat(path_fd).st_mode
            is_dir = stat.S_ISDIR(mode)
            if is_dir and kind == "file":
                raise ToolError(f"{path!r}: is a directory (use list_dir or glob)")
            if not is_dir and kind == "dir":
                raise ToolError(f"{path!r}: not a directory")
            if not is_dir and not stat.S_ISREG(mode):
                raise ToolError(f"refused: {path!r} is {type_name(mode)}; only regular files are read")
            flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | (os.O_DIRECTORY if is_dir else 0)
            fd = os.open(f"/proc/self/fd/{path_fd}", flags)  # the very inode, not the name again
        finally:
            os.close(path_fd)
        return Opened(fd, real, is_dir, base_fd, rel)

    def _open_dir_exactly(self, path: str, directory: Path) -> int:
        """An ``O_PATH`` descriptor of ``directory`` (resolved), refused if it is elsewhere now."""
        try:
            fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise self._os_error(path, error) from error
        if fd_path(fd) != directory:
            os.close(fd)
            raise ToolError(f"refused: {path!r} changed while it was being opened; try again")
        return fd

    # ---- writing ---------------------------------------------------------------------------

    async def slot(self, path: str, why: str) -> Slot:
        """Where a write of ``path`` goes, creating parent directories inside the root."""
        if not self.write:
            raise ToolError(f"refused: cannot write {path!r}: this scope is read-only")
        found = await anyio.to_thread.run_sync(self._slot_inside, path)
        if isinstance(found, _Escape) and self.contains(found.target):  # an absolute symlink inside
            found = await anyio.to_thread.run_sync(self._slot_inside, str(found.target))
        if isinstance(found, Slot):
            return found
        if self.contains(found.target):
            raise ToolError(f"refused: {path!r} changed while it was being opened; try again")
        target = await self._granted(path, found.target, "write", why)
        return await anyio.to_thread.run_sync(self._slot_outside, path, target)

    def _slot_inside(self, path: str, follow: bool = True) -> Slot | _Escape:
        rel = self._relative(path)
        if rel is None:
            return _Escape(Path(os.path.realpath(path)))
        parent, name = os.path.split(rel.rstrip("/") if rel != "/" else rel)
        if name in ("", ".", ".."):
            raise ToolError(f"refused: {path!r} does not name a file")
        dir_fd = self._parent_dir(path, parent or ".")
        if isinstance(dir_fd, _Escape):
            return _Escape(Path(os.path.realpath(self.root / rel)))
        slot = Slot(dir_fd, fd_path(dir_fd), name)
        try:
            if follow and stat.S_ISLNK(self._lstat(slot)):
                slot.close()
                return self._follow(path, rel)
            self._check_writable(path, slot.real)
        except BaseException:
            slot.close()
            raise
        return slot

    def _follow(self, path: str, rel: str) -> Slot | _Escape:
        """Writing through a symlink: write where it points, if that is inside the root."""
        try:
            fd = openat2(self.root_fd, rel, os.O_PATH)
        except OSError as error:
            if error.errno == errno.EXDEV:
                return _Escape(Path(os.path.realpath(self.root / rel)))
            if error.errno == errno.ENOENT:
                raise ToolError(f"refused: {path!r} is a symlink to a missing file") from error
            raise self._os_error(path, error) from error
        try:
            real = fd_path(fd)
        finally:
            os.close(fd)
        return self._slot_inside(str(real), follow=False)

    def _parent_dir(self, path: str, parent: str) -> int | _Escape:
        """An ``O_PATH`` descriptor of the parent directory, made (inside the root) if missing."""
        parts = [p for p in parent.split("/") if p not in ("", ".")]
        done = len(parts)
        while True:  # find the deepest part of the parent that exists
            try:
                fd = openat2(self.root_fd, "/".join(parts[:done]) or ".", os.O_PATH | os.O_DIRECTORY)
                break
            except OSError as error:
                if error.errno == errno.EXDEV:
                    return _Escape(Path())
                if error.errno != errno.ENOENT or done == 0:
                    raise self._os_error(path, error) from error
                done -= 1
        missing = parts[done:]
        if not missing:
            return fd
        try:
            if ".." in missing:
                raise ToolError(f"refused: {path!r} climbs with '..' out of a directory that does not exist")
            self._check_writable(path, fd_path(fd).joinpath(*missing))
            for part in missing:
                os.mkdir(part, dir_fd=fd)
                child = openat2(fd, part, os.O_PATH | os.O_DIRECTORY, resolve=SAFE | RESOLVE_NO_SYMLINKS)
                os.close(fd)
                fd = child
        except OSError as error:
            os.close(fd)
            raise self._os_error(path, error) from error
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _slot_outside(self, path: str, target: Path) -> Slot:
        slot = Slot(self._open_dir_exactly(path, target.parent), target.parent, target.name)
        try:
            if stat.S_ISLNK(self._lstat(slot)):
                raise ToolError(f"refused: {path!r} changed while it was being opened; try again")
            self._refuse_denied(path, slot.real, "write")
        except BaseException:
            slot.close()
            raise
        return slot

    def _check_writable(self, path: str, real: Path) -> None:
        self._refuse_denied(path, real, "write")
        if not self.contains(real) or any(real.is_relative_to(w) for w in self.write):
            return
        allowed = ", ".join(w.relative_to(self.root).as_posix() for w in self.write)
        raise ToolError(f"refused: {path!r} resolves to '{real}', outside the writable paths: {allowed}")

    @staticmethod
    def _lstat(slot: Slot) -> int:
        """The mode of what the slot's name is now (0 when nothing is there)."""
        try:
            return os.stat(slot.name, dir_fd=slot.dir_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return 0

    # ---- outside paths ---------------------------------------------------------------------

    async def _granted(self, path: str, target: Path, op: Operation, why: str) -> Path:
        """``target`` (outside the root), once the hub grants ``op`` on it; else a ToolError."""
        self._refuse_denied(path, target, op)
        where = f"refused: {path!r} resolves to '{target}', outside the project root '{self.root}'"
        if self.ask is None:
            raise ToolError(where)
        decision = await self.ask(str(target), op, why)
        if not decision.granted:
            raise ToolError(
                f"{where}; {op} access was not granted" + (f": {decision.reason}" if decision.reason else "")
            )
        return target

    def _refuse_denied(self, path: str, real: Path, op: Operation) -> None:
        reason = self.denied.reason(real, op)
        if reason is not None:
            raise ToolError(f"refused: {path!r}: {reason}")

    @staticmethod
    def _os_error(path: str, error: OSError) -> ToolError:
        why = {
            errno.ENOENT: "not found",
            errno.ENOTDIR: "a part of the path is a file, not a directory",
            errno.EISDIR: "is a directory (use list_dir or glob)",
            errno.EACCES: "permission denied",
            errno.ELOOP: "too many symlinks, or a /proc magic link",
            errno.EEXIST: "a part of the path is a file, not a directory",
        }.get(error.errno or 0, error.strerror or str(error))
        return ToolError(f"{path!r}: {why}")
