"""The ``fs`` tool server: read, write, edit, list, glob and grep inside one project root.

Every agent mounts it, read-only unless its grants give it a write scope. The hub
builds one instance per agent with :func:`build_server` and talks to it in-process; the same code
runs over stdio as ``python -m dispatch.servers.fs --root DIR [--write PATH ...]`` for process
isolation or for outside MCP clients. Every path is opened by the kernel beneath the root
(:class:`~dispatch.servers.fs.scope.FsScope`, ``openat2``), never by a name checked first; a path
that leads outside is put to the hub through ``ask`` (refused when there is none), and the
always-denied paths (:mod:`dispatch.servers.sandbox.policy`) are refused whatever the grants.
"""

from __future__ import annotations

import argparse
import os
import posixpath
from collections.abc import Callable, Generator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import anyio.to_thread
from mcp_types import ToolAnnotations
from pydantic import Field

from .._base import (
    ServerPlan,
    ToolError,
    ToolList,
    builds,
    existing_root,
    root_argument,
    serve_stdio,
)
from ..sandbox.openat2 import fd_path
from .ignore import GitIgnores
from .io import (
    GREP_SECONDS,
    MAX_GREP,
    MAX_PATTERN_CHARS,
    MAX_READ_BYTES,
    SKIP_DIRS,
    compile_pattern,
    existing_mode,
    grep_tree,
    open_existing,
    read_lines,
    read_text,
    write_atomic,
)
from .scope import Ask, FsScope, Opened, Slot

__all__ = ["MAX_GREP", "MAX_READ_BYTES", "FsTools", "build_server", "main"]

MAX_PATHS = 1000  # glob matches, list_dir entries
_T = TypeVar("_T")

_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)

_OS_ERRORS: dict[type[OSError], str] = {
    FileNotFoundError: "not found",
    IsADirectoryError: "is a directory (use list_dir or glob)",
    NotADirectoryError: "a part of the path is a file, not a directory",
    FileExistsError: "a part of the path is a file, not a directory",
    PermissionError: "permission denied",
}


@contextmanager
def _os_errors(path: str) -> Generator[None]:
    """Turn an OSError into a ToolError that names the path the model gave."""
    try:
        yield
    except OSError as e:
        why = next((text for kind, text in _OS_ERRORS.items() if isinstance(e, kind)), e.strerror or str(e))
        raise ToolError(f"{path!r}: {why}") from e


def _capped(lines: list[str], cap: int, what: str, hint: str) -> str:
    """``lines`` joined, with a final note when more than ``cap`` were cut."""
    more = f"\n[{len(lines) - cap} more {what} not shown; {hint}]" if len(lines) > cap else ""
    return "\n".join(lines[:cap]) + more


def _entry(item: os.DirEntry[str]) -> str:
    try:
        if item.is_symlink():
            return f"{item.name}  (symlink)"
        if item.is_dir(follow_symlinks=False):
            return f"{item.name}/"
        return f"{item.name}  ({item.stat(follow_symlinks=False).st_size} bytes)"
    except OSError:
        return f"{item.name}  (vanished)"


def _closing(opened: Opened | Slot, work: Callable[[], _T]) -> Callable[[], _T]:
    def run() -> _T:
        try:
            return work()
        finally:
            opened.close()

    return run


def _undoing(slot: Slot, work: Callable[[], _T]) -> Callable[[], _T]:
    def run() -> _T:
        try:
            return work()
        except BaseException:
            slot.undo()  # a failed write leaves no folders it made
            raise

    return run


async def _in_thread(opened: Opened | Slot, path: str, work: Callable[[], _T]) -> _T:
    """Run blocking file work in a worker thread, then close the descriptor; OSErrors named."""
    if isinstance(opened, Slot):
        work = _undoing(opened, work)
    with _os_errors(path):
        return await anyio.to_thread.run_sync(_closing(opened, work))


class FsTools:
    """The tool functions of one ``fs`` server, bound to its :class:`FsScope`."""

    def __init__(self, scope: FsScope, grep_seconds: float = GREP_SECONDS) -> None:
        self.scope = scope
        self.grep_seconds = grep_seconds

    async def read_file(
        self,
        path: Annotated[str, Field(description="file path, relative to the project root")],
        offset: Annotated[int, Field(ge=1, description="first line to return, 1-based")] = 1,
        limit: Annotated[int, Field(ge=1, description="how many lines to return at most")] = 2000,
    ) -> str:
        """Read lines of a text file. A part of a file ends with a line saying which lines were
        shown and the offset to pass to read on; at most 256 KiB is returned per call."""
        with _os_errors(path):
            return await self.scope.open_then(
                path, "file", f"read_file {path!r}", lambda opened: read_lines(opened, path, offset, limit)
            )

    async def write_file(self, path: str, content: str) -> str:
        """Create or overwrite a file with ``content`` (UTF-8), creating parent directories."""
        slot = await self.scope.slot(path, f"write_file {path!r}")
        data = content.encode("utf-8")

        def write() -> bool:
            existed = existing_mode(slot) is not None
            write_atomic(slot, data)
            return existed

        existed = await _in_thread(slot, path, write)
        return f"{'replaced' if existed else 'created'} {path!r} ({len(data)} bytes)"

    async def edit_file(self, path: str, old: str, new: str) -> str:
        """Replace the one exact occurrence of ``old`` in a file with ``new``. ``old`` must match
        the file exactly (whitespace included) and occur once; add surrounding lines to make it
        unique."""
        if not old:
            raise ToolError("`old` is empty: give the exact text to replace")
        slot = await self.scope.slot(path, f"edit_file {path!r}")

        def edit() -> str:
            existing = open_existing(slot)
            try:
                text = read_text(existing, path)
            finally:
                existing.close()
            count = text.count(old)
            if count == 0:
                raise ToolError(f"`old` not found in {path!r}; read the file and copy the text exactly")
            if count > 1:
                raise ToolError(
                    f"`old` occurs {count} times in {path!r}; include more surrounding lines "
                    "so that it matches exactly once"
                )
            at = text.index(old)
            data = (text[:at] + new + text[at + len(old) :]).encode("utf-8")
            write_atomic(slot, data)
            return f"edited {path!r} at line {text.count(chr(10), 0, at) + 1} ({len(data)} bytes now)"

        return await _in_thread(slot, path, edit)

    async def list_dir(self, path: str = ".") -> str:
        """List a directory: one entry a line, sorted; directories end in '/', files show their size."""
        opened = await self.scope.open(path, "dir", f"list_dir {path!r}")

        def listing() -> str:
            with os.scandir(opened.fd) as it:
                entries = sorted((_entry(item) for item in it), key=str.lower)
            return _capped(entries, MAX_PATHS, "entries", "use glob to narrow") or f"{path!r} is empty"

        return await _in_thread(opened, path, listing)

    def glob(
        self,
        pattern: Annotated[str, Field(description="pattern relative to the root, e.g. 'src/**/*.py'")],
    ) -> str:
        """Paths under the project root matching a glob pattern (pathlib rules; `**` spans
        directories), sorted, root-relative; directories end in '/'. .git/ is skipped, and so is
        what the project's .gitignore files ignore, unless the pattern starts in an ignored
        folder (e.g. 'node_modules/pkg/*.js')."""
        if not pattern or Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise ToolError(f"bad pattern {pattern!r}: give a pattern relative to the root, without '..'")
        root = self.scope.root
        try:
            matches = list(root.glob(pattern))
        except (ValueError, NotImplementedError, OSError) as e:
            raise ToolError(f"bad pattern {pattern!r}: {e}") from e
        ignores = self._ignores(_literal_prefix(pattern), None)
        found: list[str] = []
        outside = ignored = 0
        for match in matches:
            rel = match.relative_to(root)
            if SKIP_DIRS.intersection(rel.parts):
                continue
            if ignores is not None and ignores.ignored(rel.as_posix(), match.is_dir()):
                ignored += 1
                continue
            resolved = Path(os.path.realpath(match))
            if (
                not self.scope.contains(resolved)
                or self.scope.denied.reason(resolved, "read")
                or not self.scope.may_read(resolved)
            ):
                outside += 1  # reached through a symlink that leads out of the root, always denied, or not readable
                continue
            found.append(rel.as_posix() + "/" if match.is_dir() else rel.as_posix())
        text = _capped(sorted(found), MAX_PATHS, "matches", "narrow the pattern")
        if outside:
            text += (
                f"\n[{outside} matches left out: they resolve outside the project root or this agent's read "
                "paths, or are always denied]"
            )
        if ignored:
            text += (
                f"\n[{ignored} matches left out: .gitignore ignores them; a pattern that starts in an ignored "
                "folder finds them]"
            )
        return text.strip() or f"no paths match {pattern!r}"

    def _ignores(self, asked: str, is_dir: bool | None) -> GitIgnores | None:
        """The project's ignore rules for a search of the root-relative path ``asked``; None when
        that path is itself ignored (then everything in it is searched). ``is_dir`` None: look."""
        ignores = GitIgnores(self.scope.root_fd)
        if is_dir is None:
            is_dir = (self.scope.root / asked).is_dir()
        return None if ignores.ignored(asked, is_dir) else ignores

    async def grep(
        self,
        pattern: Annotated[
            str,
            Field(description=f"Python regular expression, searched in each line (at most {MAX_PATTERN_CHARS} chars)"),
        ],
        path: Annotated[str, Field(description="a file or directory to search, relative to the root")] = ".",
    ) -> str:
        """Search text files for a regex. Prints `path:line: text` per matching line, at most 500;
        binary files, .git/ and what the project's .gitignore files ignore are skipped (unless
        `path` itself is ignored: then it is searched), a very long line is searched in its first
        10,000 characters, and a search stops with an error after 10 seconds."""
        compiled = await anyio.to_thread.run_sync(compile_pattern, pattern)  # a large pattern compiles slowly
        opened = await self.scope.open(path, "any", f"grep {pattern!r} in {path!r}")
        shown = self.scope.shown(opened.real)
        shown = "" if shown == "." else shown
        denied = self.scope.denied

        def allowed(fd: int) -> bool:
            real = fd_path(fd)
            return denied.reason(real, "read") is None and self.scope.may_read(real)

        ignored: Callable[[str, bool], bool] | None = None
        if opened.is_dir and self.scope.contains(opened.real):
            ignores = self._ignores(shown or ".", True)
            if ignores is not None:
                ignored = lambda rel, is_dir: ignores.ignored(posixpath.join(shown, rel), is_dir)  # noqa: E731

        seconds = self.grep_seconds
        out = await _in_thread(opened, path, lambda: grep_tree(opened, shown, compiled, allowed, seconds, ignored))
        return "\n".join(out) or f"no matches for {pattern!r} in {path!r}"


def _literal_prefix(pattern: str) -> str:
    """The path a glob pattern names before its first wildcard (``.`` for none): all of it when
    it has none."""
    parts: list[str] = []
    whole = Path(pattern).parts
    for part in whole if not any(c in pattern for c in "*?[") else whole[:-1]:
        if any(c in part for c in "*?["):
            break
        parts.append(part)
    return "/".join(parts) or "."


def plan_server(
    root: Path,
    write: Sequence[Path] | None = None,
    ask: Ask | None = None,
    read: Sequence[Path] | None = None,
    *,
    grep_seconds: float = GREP_SECONDS,
) -> ServerPlan:
    """An ``fs`` server scoped to ``root``: writable everywhere (``write=None``), in the given
    paths (relative to the root or absolute inside it), or nowhere (an empty list); readable in
    the whole root (``read=None``), or only in ``read`` and ``write``.

    ``ask`` requests access to a path outside the root from the hub (the agent's
    ``HubLink.request_access``); without it such paths are refused. ``grep_seconds``: how long
    one ``grep`` may take.
    """
    tools = FsTools(FsScope(root, write, ask, read=read), grep_seconds)
    listed = ToolList()
    for fn in (tools.read_file, tools.list_dir, tools.glob, tools.grep):
        listed.add(fn, annotations=_READ)
    for fn in (tools.write_file, tools.edit_file):
        listed.add(fn, annotations=_WRITE)
    return ServerPlan(
        "fs",
        "File tools for one project. Paths are relative to the project root; a path outside it "
        "needs the user's approval, and some paths (credentials, git hooks, Dispatch's config) are "
        "always refused.",
        listed,
    )


build_server = builds(plan_server)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m dispatch.servers.fs --root DIR [--write PATH ...] [--read PATH ...]``: serve over stdio."""
    parser = argparse.ArgumentParser(prog="python -m dispatch.servers.fs", description=__doc__)
    root_argument(parser)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--write", type=Path, nargs="+", action="extend", help="writable paths (default: the whole root)"
    )
    scope.add_argument("--read-only", action="store_true", help="refuse every write")
    parser.add_argument(
        "--read", type=Path, nargs="+", action="extend", help="the only readable paths besides the writable ones"
    )
    args = parser.parse_args(argv)
    root = existing_root(parser, args.root)
    try:
        server = build_server(root, [] if args.read_only else args.write, read=args.read)
    except ValueError as e:
        parser.error(str(e))
    serve_stdio(server)
