"""The ``fs`` tool server: read, write, edit, list, glob and grep inside one project root.

Every agent mounts it (DESIGN.md §4), read-only unless its grants give it a write scope. The hub
builds one instance per agent with :func:`build_server` and talks to it in-process; the same code
runs over stdio as ``python -m dispatch.servers.fs --root DIR [--write PATH ...]`` for process
isolation or for outside MCP clients. All path checks live in :class:`PathRules`: a path is
resolved against the root (never the process cwd), through symlinks, before anything touches it.
Paths outside the root are refused here; asking the user for them is the hub's job.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import stat
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

from mcp_types import ToolAnnotations
from pydantic import Field

from ._base import MCPServer, ToolError, existing_root, new_server, root_argument, serve_stdio

__all__ = ["FsTools", "PathRules", "build_server", "main"]

MAX_READ_BYTES = 256 * 1024
MAX_PATHS = 1000  # glob matches, list_dir entries
MAX_GREP = 500
GREP_LINE_CHARS = 300
SNIFF_BYTES = 8192  # a NUL byte in the first 8 KiB marks a file as binary, as git does
SKIP_DIRS = frozenset({".git"})

_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)


class PathRules:
    """Where one scope may read (the root) and write (the root, or the given paths inside it).

    Each check resolves the path with ``os.path.realpath`` and returns the resolved path, or
    raises :class:`ToolError` naming the path given, what it resolved to and the rule broken.
    """

    def __init__(self, root: Path, write: Sequence[Path] | None = None) -> None:
        self.root = Path(os.path.realpath(root))
        if not self.root.is_dir():
            raise ValueError(f"project root {str(root)!r} is not a directory")
        paths = [self.root] if write is None else [Path(os.path.realpath(self.root / p)) for p in write]
        for given, resolved in zip(write or [], paths, strict=False):
            if not self.contains(resolved):
                raise ValueError(f"write path {str(given)!r} resolves to '{resolved}', outside '{self.root}'")
        self.write: tuple[Path, ...] = tuple(paths)

    def contains(self, resolved: Path) -> bool:
        """Whether an already resolved path is the root or inside it."""
        return resolved.is_relative_to(self.root)

    def readable(self, path: str) -> Path:
        """``path`` (relative to the root, or absolute) resolved, if it lies inside the root."""
        try:
            resolved = Path(os.path.realpath(self.root / path))
        except (ValueError, OSError) as e:  # an embedded NUL byte, a symlink loop
            raise ToolError(f"refused: {path!r} is not a usable path ({e})") from e
        if not self.contains(resolved):
            raise ToolError(f"refused: {path!r} resolves to '{resolved}', outside the project root '{self.root}'")
        return resolved

    def writable(self, path: str) -> Path:
        """``path`` resolved, if it lies inside the root and inside one of the write paths."""
        resolved = self.readable(path)
        if any(resolved.is_relative_to(w) for w in self.write):
            return resolved
        if not self.write:
            raise ToolError(f"refused: cannot write {path!r}: this scope is read-only")
        allowed = ", ".join(w.relative_to(self.root).as_posix() for w in self.write)
        raise ToolError(f"refused: {path!r} resolves to '{resolved}', outside the writable paths: {allowed}")


_OS_ERRORS: dict[type[OSError], str] = {
    FileNotFoundError: "not found",
    IsADirectoryError: "is a directory (use list_dir or glob)",
    NotADirectoryError: "a part of the path is a file, not a directory",
    FileExistsError: "a part of the path is a file, not a directory",  # from mkdir(parents=True)
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


def _is_binary(head: bytes) -> bool:
    return b"\0" in head[:SNIFF_BYTES]


def _read_text(target: Path, path: str) -> str:
    """A whole text file as a string, exactly (line endings kept), or a ToolError."""
    data = target.read_bytes()
    if _is_binary(data):
        raise ToolError(f"{path!r} is a binary file (it contains NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ToolError(f"{path!r} is not UTF-8 text ({e.reason} at byte {e.start})") from e


def _write_atomic(target: Path, data: bytes) -> None:
    """Write through a temporary file in the same directory, then ``os.replace`` it into place."""
    if target.is_dir():
        raise IsADirectoryError(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    old_mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else None
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any new file
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if old_mode is not None:
            os.chmod(tmp, old_mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_lines(target: Path, path: str, offset: int, limit: int) -> str:
    """Lines ``offset..offset+limit-1`` of a text file, with a footer unless it is the whole file."""
    chunks: list[bytes] = []
    size = total = 0
    last = offset - 1
    cut = False
    with target.open("rb") as f:
        if _is_binary(f.read(SNIFF_BYTES)):
            raise ToolError(f"{path!r} is a binary file (it contains NUL bytes); read_file reads text only")
        f.seek(0)
        for total, line in enumerate(f, start=1):  # total ends as the line count
            if offset <= total < offset + limit and not cut:
                size += len(line)
                cut = size > MAX_READ_BYTES
                if not cut or not chunks:  # a first line longer than the cap still shows its head
                    chunks.append(line[:MAX_READ_BYTES])
                    last = total
    if total == 0:
        return "[empty file]"
    if offset > total:
        raise ToolError(f"offset {offset} is past the end: {path!r} has {total} lines")
    text = b"".join(chunks).decode("utf-8", errors="replace")
    if offset == 1 and last == total and not cut:
        return text
    note = f"lines {offset}-{last} of {total}"
    if cut:
        note += f", stopped at the {MAX_READ_BYTES // 1024} KiB cap"
    note += f"; pass offset={last + 1} to read on" if last < total else "; end of file"
    return f"{text.rstrip(chr(10))}\n[{note}]"


def _grep_file(file: Path, rel: str, regex: re.Pattern[str], out: list[str]) -> None:
    """Append ``rel:line: text`` for each matching line, up to MAX_GREP lines in ``out``."""
    try:
        with file.open("rb") as f:
            if _is_binary(f.read(SNIFF_BYTES)):
                return
            f.seek(0)
            for number, raw in enumerate(f, start=1):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if regex.search(line):
                    out.append(f"{rel}:{number}: {line[:GREP_LINE_CHARS]}")
                    if len(out) >= MAX_GREP:
                        return
    except OSError:
        return  # unreadable (permissions, vanished): not a match


def _walk_files(top: Path) -> Iterator[Path]:
    """Files under ``top`` in sorted order, skipping ``.git/`` and not following symlinked dirs."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            yield Path(dirpath, name)


def _capped(lines: list[str], cap: int, what: str, hint: str) -> str:
    """``lines`` joined, with a final note when more than ``cap`` were cut."""
    more = f"\n[{len(lines) - cap} more {what} not shown; {hint}]" if len(lines) > cap else ""
    return "\n".join(lines[:cap]) + more


def _entry(item: os.DirEntry[str]) -> str:
    try:
        if item.is_dir():
            return f"{item.name}/"
        return f"{item.name}  ({item.stat().st_size} bytes)"
    except OSError:
        return f"{item.name}  (broken link)"


class FsTools:
    """The tool functions of one ``fs`` server, bound to its :class:`PathRules`."""

    def __init__(self, rules: PathRules) -> None:
        self.rules = rules

    def read_file(
        self,
        path: Annotated[str, Field(description="file path, relative to the project root")],
        offset: Annotated[int, Field(ge=1, description="first line to return, 1-based")] = 1,
        limit: Annotated[int, Field(ge=1, description="how many lines to return at most")] = 2000,
    ) -> str:
        """Read lines of a text file. A part of a file ends with a line saying which lines were
        shown and the offset to pass to read on; at most 256 KiB is returned per call."""
        target = self.rules.readable(path)
        with _os_errors(path):
            return _read_lines(target, path, offset, limit)

    def write_file(self, path: str, content: str) -> str:
        """Create or overwrite a file with ``content`` (UTF-8), creating parent directories."""
        target = self.rules.writable(path)
        data = content.encode("utf-8")
        with _os_errors(path):
            existed = target.exists()
            _write_atomic(target, data)
        return f"{'replaced' if existed else 'created'} {path!r} ({len(data)} bytes)"

    def edit_file(self, path: str, old: str, new: str) -> str:
        """Replace the one exact occurrence of ``old`` in a file with ``new``. ``old`` must match
        the file exactly (whitespace included) and occur once; add surrounding lines to make it
        unique."""
        target = self.rules.writable(path)
        if not old:
            raise ToolError("`old` is empty: give the exact text to replace")
        with _os_errors(path):
            text = _read_text(target, path)
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
        with _os_errors(path):
            _write_atomic(target, data)
        return f"edited {path!r} at line {text.count(chr(10), 0, at) + 1} ({len(data)} bytes now)"

    def list_dir(self, path: str = ".") -> str:
        """List a directory: one entry a line, sorted; directories end in '/', files show their size."""
        target = self.rules.readable(path)
        with _os_errors(path), os.scandir(target) as it:
            entries = sorted((_entry(item) for item in it), key=str.lower)
        return _capped(entries, MAX_PATHS, "entries", "use glob to narrow") or f"{path!r} is empty"

    def glob(
        self,
        pattern: Annotated[str, Field(description="pattern relative to the root, e.g. 'src/**/*.py'")],
    ) -> str:
        """Paths under the project root matching a glob pattern (pathlib rules; `**` spans
        directories), sorted, root-relative; directories end in '/'. .git/ is skipped."""
        if not pattern or Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise ToolError(f"bad pattern {pattern!r}: give a pattern relative to the root, without '..'")
        root = self.rules.root
        try:
            matches = list(root.glob(pattern))
        except (ValueError, NotImplementedError, OSError) as e:
            raise ToolError(f"bad pattern {pattern!r}: {e}") from e
        found: list[str] = []
        outside = 0
        for match in matches:
            rel = match.relative_to(root)
            if SKIP_DIRS.intersection(rel.parts):
                continue
            if not self.rules.contains(Path(os.path.realpath(match))):
                outside += 1  # reached through a symlink that leads out of the root
                continue
            found.append(rel.as_posix() + "/" if match.is_dir() else rel.as_posix())
        text = _capped(sorted(found), MAX_PATHS, "matches", "narrow the pattern")
        if outside:
            text += f"\n[{outside} matches left out: they resolve outside the project root]"
        return text.strip() or f"no paths match {pattern!r}"

    def grep(
        self,
        pattern: Annotated[str, Field(description="Python regular expression, searched in each line")],
        path: Annotated[str, Field(description="a file or directory to search, relative to the root")] = ".",
    ) -> str:
        """Search text files for a regex. Prints `path:line: text` per matching line, at most 500;
        binary files and .git/ are skipped."""
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise ToolError(f"bad regex {pattern!r}: {e}") from e
        target = self.rules.readable(path)
        if not target.exists():
            raise ToolError(f"not found: {path!r}")
        out: list[str] = []
        for file in _walk_files(target) if target.is_dir() else [target]:
            resolved = Path(os.path.realpath(file))
            if resolved.is_file() and self.rules.contains(resolved):
                _grep_file(resolved, file.relative_to(self.rules.root).as_posix(), regex, out)
            if len(out) >= MAX_GREP:
                out.append(f"[stopped at {MAX_GREP} matches; narrow the pattern or the path]")
                break
        return "\n".join(out) or f"no matches for {pattern!r} in {path!r}"


def build_server(root: Path, write: Sequence[Path] | None = None) -> MCPServer:
    """An ``fs`` server scoped to ``root``: writable everywhere (``write=None``), in the given
    paths (relative to the root or absolute inside it), or nowhere (an empty list)."""
    tools = FsTools(PathRules(root, write))
    server = new_server(
        "fs",
        "File tools for one project. Paths are relative to the project root; "
        "paths that resolve outside it are refused.",
    )
    for fn in (tools.read_file, tools.list_dir, tools.glob, tools.grep):
        server.add_tool(fn, annotations=_READ, structured_output=False)
    for fn in (tools.write_file, tools.edit_file):
        server.add_tool(fn, annotations=_WRITE, structured_output=False)
    return server


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m dispatch.servers.fs --root DIR [--write PATH ...]``: serve over stdio."""
    parser = argparse.ArgumentParser(prog="python -m dispatch.servers.fs", description=__doc__)
    root_argument(parser)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--write", type=Path, nargs="+", action="extend", help="writable paths (default: the whole root)"
    )
    scope.add_argument("--read-only", action="store_true", help="refuse every write")
    args = parser.parse_args(argv)
    root = existing_root(parser, args.root)
    try:
        server = build_server(root, [] if args.read_only else args.write)
    except ValueError as e:
        parser.error(str(e))
    serve_stdio(server)


if __name__ == "__main__":
    main()
