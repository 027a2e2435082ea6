"""The ``fs`` server's file work on descriptors :class:`~dispatch.servers.fs.scope.FsScope`
opened: size-capped reads, writes through a temporary file renamed into place, grep over a tree.

Nothing here takes a path to resolve: only open descriptors, and names inside an open directory,
never followed through a symlink.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

import regex

from .._base import ToolError
from ..sandbox.openat2 import openat2
from ..sandbox.output import is_binary
from .scope import Opened, Slot, type_name

__all__ = ["compile_pattern", "grep_tree", "read_lines", "read_text", "write_atomic"]

MAX_READ_BYTES = 256 * 1024
"""What one read_file call returns at most."""
MAX_SCAN_BYTES = 64 * 1024 * 1024
"""What one call reads of a file at most: read_file counts lines that far, edit_file and grep
refuse or skip a larger file."""
MAX_GREP = 500
GREP_LINE_CHARS = 300
"""How much of a matching line grep shows."""
GREP_SEARCH_CHARS = 10_000
"""How much of each line grep searches: the rest of a longer line (minified code, data) is not."""
GREP_SECONDS = 10.0
"""How long one grep may take, every file together: a pattern that backtracks for longer is stopped."""
MAX_PATTERN_CHARS = 1000
MAX_REPEATS = 100_000
"""The most a pattern's repetition counts (``{n}``, ``{n,m}``) may come to, multiplied together: the
engine unrolls them when it compiles (``a{10000000}`` would take gigabytes)."""
_COUNT = re.compile(r"\{(\d*)(?:,\d*)?\}")
SNIFF_BYTES = 8192
"""How much of a file :func:`~dispatch.servers.sandbox.output.is_binary` judges (git looks as far)."""
SKIP_DIRS = frozenset({".git"})
Ignored = Callable[[str, bool], bool]
"""``ignored(path, is_dir)``: whether grep leaves a path out (the project's .gitignore rules)."""
_BINARY = "is a binary file (a NUL byte, or mostly bytes that are not text)"


def _file(opened: Opened) -> BinaryIO:
    return os.fdopen(os.dup(opened.fd), "rb")


def read_text(opened: Opened, path: str) -> str:
    """A whole text file as a string, exactly (line endings kept), or a ToolError."""
    if os.fstat(opened.fd).st_size > MAX_SCAN_BYTES:
        raise ToolError(f"{path!r} is larger than {MAX_SCAN_BYTES // 2**20} MiB; edit it with the shell")
    with _file(opened) as f:
        data = f.read(MAX_SCAN_BYTES + 1)
    if is_binary(data[:SNIFF_BYTES]):
        raise ToolError(f"{path!r} {_BINARY}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ToolError(f"{path!r} is not UTF-8 text ({e.reason} at byte {e.start})") from e


def read_lines(opened: Opened, path: str, offset: int, limit: int) -> str:
    """Lines ``offset..offset+limit-1`` of a text file, with a footer unless it is the whole file."""
    chunks: list[bytes] = []
    size = total = scanned = 0
    last = offset - 1
    cut = stopped = False
    with _file(opened) as f:
        if is_binary(f.read(SNIFF_BYTES)):
            raise ToolError(f"{path!r} {_BINARY}; read_file reads text only")
        f.seek(0)
        for total, line in enumerate(f, start=1):  # total ends as the line count
            scanned += len(line)
            if offset <= total < offset + limit and not cut:
                size += len(line)
                cut = size > MAX_READ_BYTES
                if not cut or not chunks:  # a first line longer than the cap still shows its head
                    chunks.append(line[:MAX_READ_BYTES])
                    last = total
            if scanned > MAX_SCAN_BYTES and (cut or total >= offset + limit):
                stopped = True
                break
    if total == 0:
        return "[empty file]"
    if offset > total:
        raise ToolError(f"offset {offset} is past the end: {path!r} has {total} lines")
    text = b"".join(chunks).decode("utf-8", errors="replace")
    if offset == 1 and last == total and not cut and not stopped:
        return text
    count = f"at least {total}" if stopped else str(total)
    note = f"lines {offset}-{last} of {count}"
    if cut:
        note += f", stopped at the {MAX_READ_BYTES // 1024} KiB cap"
    note += f"; pass offset={last + 1} to read on" if last < total or stopped else "; end of file"
    return f"{text.rstrip(chr(10))}\n[{note}]"


def existing_mode(slot: Slot) -> int | None:
    """The permission bits of the regular file in the slot, None when there is none yet."""
    try:
        st = os.stat(slot.name, dir_fd=slot.dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", slot.name)
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
        raise ToolError(f"refused: '{slot.real}' is {type_name(st.st_mode)}; only regular files are written")
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


def open_existing(slot: Slot) -> Opened:
    """The regular file now in the slot, opened for reading (never through a symlink)."""
    fd = openat2(slot.dir_fd, slot.name, os.O_PATH | os.O_NOFOLLOW)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ToolError(f"refused: '{slot.real}' is {type_name(mode)}; only regular files are edited")
        reopened = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(fd)
    return Opened(reopened, slot.real, False, slot.dir_fd, slot.name)


def write_atomic(slot: Slot, data: bytes) -> None:
    """Write through a temporary file in the slot's directory, then rename it over the name."""
    old_mode = existing_mode(slot)
    tmp = f".{slot.name}.{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o666, dir_fd=slot.dir_fd)  # the umask applies, as for any new file
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if old_mode is not None:
                os.fchmod(f.fileno(), old_mode)
            os.fsync(f.fileno())
        os.rename(tmp, slot.name, src_dir_fd=slot.dir_fd, dst_dir_fd=slot.dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=slot.dir_fd)
        raise


def compile_pattern(pattern: str) -> regex.Pattern[str]:
    """``pattern`` compiled for :func:`grep_tree`, or a ToolError saying which cap it passes.

    The ``regex`` engine, not ``re``: it takes a timeout and lets other threads run while it
    matches, so a pattern that backtracks exponentially stops at the deadline and never holds the
    interpreter (the hub serves every agent from the same process)."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ToolError(f"the pattern is {len(pattern)} characters long; grep takes at most {MAX_PATTERN_CHARS}")
    repeats = 1
    for count in _COUNT.finditer(pattern):
        repeats *= max(int(count[1] or 0), 1)
        if repeats > MAX_REPEATS:
            raise ToolError(
                f"the repetition counts of {pattern!r} multiply to more than {MAX_REPEATS:,}; use smaller counts"
            )
    try:
        return regex.compile(pattern)
    except (regex.error, RecursionError, OverflowError, ValueError) as e:
        raise ToolError(f"bad regex {pattern!r}: {e}") from e


class _PastDeadline(Exception):
    """The grep's deadline passed while it searched the line this names (``path:line``)."""


def _grep_fd(fd: int, shown: str, pattern: regex.Pattern[str], out: list[str], deadline: float) -> int:
    """Append the file's matching lines to ``out``; how many lines were longer than searched."""
    long_lines = 0
    with os.fdopen(fd, "rb") as f:
        if os.fstat(f.fileno()).st_size > MAX_SCAN_BYTES or is_binary(f.read(SNIFF_BYTES)):
            return 0
        f.seek(0)
        for number, raw in enumerate(f, start=1):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if len(line) > GREP_SEARCH_CHARS:
                long_lines += 1
                line = line[:GREP_SEARCH_CHARS]
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                found = pattern.search(line, timeout=left)
            except TimeoutError:
                raise _PastDeadline(f"{shown}:{number}") from None
            if found:
                out.append(f"{shown}:{number}: {line[:GREP_LINE_CHARS]}")
                if len(out) >= MAX_GREP:
                    break
    return long_lines


def _files(opened: Opened, ignored: Ignored | None) -> Iterator[str]:
    """Paths (relative to the opened directory) of the entries to grep, sorted, .git/ and what
    ``ignored(path, is_dir)`` says skipped, symlinked directories not entered."""
    for dirpath, dirnames, filenames, _ in os.fwalk(".", dir_fd=opened.fd, follow_symlinks=False):
        here = os.path.normpath(dirpath)
        kept = sorted(d for d in dirnames if d not in SKIP_DIRS)
        if ignored is not None:
            kept = [d for d in kept if not ignored(os.path.normpath(os.path.join(here, d)), True)]
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = os.path.normpath(os.path.join(here, name))
            if ignored is None or not ignored(rel, False):
                yield rel


def _open_regular(base_fd: int, rel: str, allowed: Callable[[int], bool]) -> int | None:
    """``rel`` beneath ``base_fd`` opened for reading if it is an allowed regular file, else None."""
    try:
        path_fd = openat2(base_fd, rel, os.O_PATH)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(path_fd).st_mode) or not allowed(path_fd):
            return None
        return os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    finally:
        os.close(path_fd)


def grep_tree(
    opened: Opened,
    shown: str,
    pattern: regex.Pattern[str],
    allowed: Callable[[int], bool],
    seconds: float = GREP_SECONDS,
    ignored: Ignored | None = None,
) -> list[str]:
    """``path:line: text`` for each matching line, at most MAX_GREP, each line searched in its
    first GREP_SEARCH_CHARS characters; ``allowed(fd)`` says whether a file (opened beneath the same
    base as ``opened``) may be read, ``ignored(path, is_dir)`` whether a path beneath a searched
    directory (relative to it) is left out. A ToolError when it takes longer than ``seconds``."""
    out: list[str] = []
    deadline = time.monotonic() + seconds
    long_lines = 0
    entries = _files(opened, ignored) if opened.is_dir else iter([""])
    for entry in entries:
        rel = os.path.join(opened.rel, entry) if entry else opened.rel
        fd = _open_regular(opened.base_fd, rel, allowed)
        if fd is None:
            continue  # leads out of the base, vanished, unreadable, not a regular file: no match
        try:
            long_lines += _grep_fd(fd, os.path.join(shown, entry) if entry else shown, pattern, out, deadline)
        except _PastDeadline as past:
            raise ToolError(
                f"grep stopped at its {seconds:g} s deadline while searching {past} ({len(out)} matching lines "
                "before it): a pattern with nested repetition, such as (a+)+, can take exponential time on "
                "one line; simplify the pattern, or search a narrower path"
            ) from None
        if len(out) >= MAX_GREP:
            out.append(f"[stopped at {MAX_GREP} matches; narrow the pattern or the path]")
            break
    if long_lines:
        lines, cap = ("1 line" if long_lines == 1 else f"{long_lines} lines"), f"{GREP_SEARCH_CHARS:,}"
        out.append(f"[{lines} longer than {cap} characters: only the first {cap} searched]")
    return out
