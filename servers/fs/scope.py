"""Where one ``fs`` server may read and write, enforced by the kernel: every path is opened with
``openat2(root_fd, path, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`` and then used only through the
file descriptor it gave, so nothing can be swapped between a check and its use.

A path that leads out of the root (``..``, an absolute path, a symlink; ``EXDEV`` from the kernel)
becomes an *outside* path: refused at once when always denied (:mod:`.sandbox.policy`), otherwise
put to ``ask`` (the agent's ``HubLink.request_access``, which the hub answers by the agent's
identity). Once granted it is opened beneath its own directory the same way, and refused if it
changed meanwhile. A server without ``ask`` (standalone over stdio) refuses every outside path.
Only regular files are read or written (never a FIFO or a device), through a size cap.

Inside the root, an agent given read paths reads only those and its write paths (checked on the
resolved path of the open descriptor; refused, never asked: a scope is set when the agent is
summoned); without read paths it reads the whole root. A write may make the missing folders on
its way only when the file it writes is writable (inside a write path): so only the missing
ancestors of a write path, or folders inside one; a write refused after it made folders removes
them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, TypeVar

import anyio.to_thread

from .._base import ToolError
from ..hublink import AccessDecision, Operation
from ..paths import covered_by_any
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
    made: list[tuple[int, str]] = field(default_factory=list[tuple[int, str]])
    """The folders made on the way to it, outermost first: (an open descriptor of the folder
    each was made in, its name)."""

    @property
    def real(self) -> Path:
        return self.dir_real / self.name

    def undo(self) -> None:
        """Remove the folders made for this write (a refused or failed one), innermost first;
        one that is no longer empty stays."""
        for parent_fd, name in reversed(self.made):
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=parent_fd)

    def close(self) -> None:
        if self.dir_fd != -1:
            os.close(self.dir_fd)
        for parent_fd, _ in self.made:
            os.close(parent_fd)
        self.made.clear()


@dataclass(frozen=True)
class _Escape:
    """A path that led out of the root, resolved to where it leads."""

    target: Path


_T = TypeVar("_T")


@dataclass(frozen=True)
class _Done(Generic[_T]):
    """What the work on a file opened inside the root gave."""

    value: _T


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
    """The root, read and write paths of one ``fs`` server, and the opening of paths beneath them."""

    def __init__(
        self,
        root: Path,
        write: Sequence[Path] | None = None,
        ask: Ask | None = None,
        denied: DeniedPaths | None = None,
        read: Sequence[Path] | None = None,
    ) -> None:
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise ValueError(f"project root {str(root)!r} is not a directory")
        self.write: tuple[Path, ...] = (self.root,) if write is None else self._inside("write", write)
        self.read: tuple[Path, ...] | None = None if read is None else self._inside("read", read)
        """Where inside the root it may read besides ``write``; None: the whole root."""
        self.ask = ask
        self.denied = denied or DeniedPaths.current(self.root)
        self.root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        weakref.finalize(self, os.close, self.root_fd)

    def _inside(self, what: str, given: Sequence[Path]) -> tuple[Path, ...]:
        resolved = [Path(os.path.realpath(self.root / p)) for p in given]
        for path, real in zip(given, resolved, strict=True):
            if not self.contains(real):
                raise ValueError(f"{what} path {str(path)!r} resolves to '{real}', outside '{self.root}'")
        return tuple(resolved)

    def may_read(self, real: Path) -> bool:
        """Whether a resolved path inside the root is within the read or write paths (outside the
        root, the hub decides)."""
        return self.read is None or not self.contains(real) or covered_by_any(real, (*self.read, *self.write))

    def _refuse_unreadable(self, path: str, real: Path) -> None:
        if not self.may_read(real):
            listed = ", ".join(self.shown(p) for p in (*(self.read or ()), *self.write))
            raise ToolError(
                f"refused: {path!r} resolves to '{self.shown(real)}', outside this agent's read paths "
                f"({listed}); they are set when the agent is summoned"
            )

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
            self._refuse_unreadable(path, lexical)
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
        return found if isinstance(found, Opened) else await self._open_escaped(path, found, kind, why)

    async def open_then(self, path: str, kind: Kind, why: str, work: Callable[[Opened], _T]) -> _T:
        """:meth:`open`, then ``work`` on what it opened, closed after: in one worker thread when
        ``path`` opens inside the root (one hand-off from the event loop, not two)."""

        def inside() -> _Done[_T] | _Escape:
            found = self._open_inside(path, kind)
            if isinstance(found, _Escape):
                return found
            try:
                return _Done(work(found))
            finally:
                found.close()

        found = await anyio.to_thread.run_sync(inside)
        if isinstance(found, _Done):
            return found.value
        opened = await self._open_escaped(path, found, kind, why)

        def escaped() -> _T:
            try:
                return work(opened)
            finally:
                opened.close()

        return await anyio.to_thread.run_sync(escaped)

    async def _open_escaped(self, path: str, found: Opened | _Escape, kind: Kind, why: str) -> Opened:
        """What :meth:`open` does for a path that did not open inside the root."""
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
            self._refuse_unreadable(path, real)
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
        made = self._parent_dir(path, parent or ".", name)
        if isinstance(made, _Escape):
            return _Escape(Path(os.path.realpath(self.root / rel)))
        dir_fd, folders = made
        slot = Slot(dir_fd, fd_path(dir_fd), name, folders)
        try:
            if follow and stat.S_ISLNK(self._lstat(slot)):
                slot.close()
                return self._follow(path, rel)
            self._check_writable(path, slot.real)
        except BaseException:
            slot.undo()
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

    def _parent_dir(self, path: str, parent: str, name: str) -> tuple[int, list[tuple[int, str]]] | _Escape:
        """An ``O_PATH`` descriptor of the parent directory of ``name``, made (inside the root) if
        missing and ``name`` is writable there, and the folders it made (see :attr:`Slot.made`)."""
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
        if ".." in missing:
            os.close(fd)
            raise ToolError(f"refused: {path!r} climbs with '..' out of a directory that does not exist")
        return self._make_dirs(path, fd, missing, name)

    def _make_dirs(self, path: str, fd: int, missing: list[str], name: str) -> tuple[int, list[tuple[int, str]]]:
        """Make ``missing`` beneath ``fd`` (consumed) if ``name`` beneath them is writable: the
        deepest one's descriptor and the folders made; on any failure, none is left."""
        made: list[tuple[int, str]] = []
        try:
            if missing:
                self._check_writable(path, fd_path(fd).joinpath(*missing, name))  # the folders are on its way
            for part in missing:
                os.mkdir(part, dir_fd=fd)
                made.append((fd, part))
                fd = -1  # held in ``made`` now
                fd = openat2(made[-1][0], part, os.O_PATH | os.O_DIRECTORY, resolve=SAFE | RESOLVE_NO_SYMLINKS)
        except BaseException as error:
            undone = Slot(fd, Path(), "", made)
            undone.undo()
            undone.close()
            if isinstance(error, OSError):
                raise self._os_error(path, error) from error
            raise
        return fd, made

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
