"""The diff a proposed fs write would make, for the user to review before it runs.

:func:`proposed_diff` reads the file as it is and applies ``write_file`` (the whole new content) or
``edit_file`` (its one exact replacement, as the fs server does) in memory, and returns the
unified diff between the two, as ``git diff`` shows one file: a new file is all added. Python's
``difflib`` makes it (one file, no store needed). What it shows is bounded: a file too large to
diff, a binary file, an edit whose ``old`` text does not match, a path outside the project or a
special file are said in one line instead; a diff longer than :data:`SHOWN_CHARS` is cut at a line,
with a note of what is left out (:func:`bounded`, for any diff an approval shows). It reads the
disk: call it in a worker thread.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dispatch.hub.policy.paths import ROOT, normalize_path

__all__ = ["MAX_DIFFED_BYTES", "SHOWN_CHARS", "bounded", "proposed_diff"]

SHOWN_CHARS = 20_000
"""At most this much of a diff is shown; the rest is counted in a note."""
MAX_DIFFED_BYTES = 1024 * 1024
"""A file (before or after the write) larger than this is not diffed: its sizes are shown."""


def proposed_diff(root: Path, name: str, arguments: Mapping[str, Any]) -> str:
    """The unified diff of the fs tool call ``name`` (``write_file``, ``edit_file``) with
    ``arguments`` against the file under ``root`` as it is now; a one-line note (``# ...``)
    where no diff can be shown."""
    raw = arguments.get("path")
    given = raw if isinstance(raw, str) else ""
    if os.path.isabs(given) and given.startswith(f"{root}/"):
        given = os.path.relpath(given, root)  # the fs server takes an absolute path inside the root too
    try:
        path = normalize_path(given)
    except ValueError:
        path = ROOT
    if path == ROOT:
        return f"# no diff: {raw!r} is not a file path in the project"
    try:
        found = _read(root, path)
    except _NoDiff as why:
        return f"# no diff: {why}"
    if name == "edit_file":
        old, new = str(arguments.get("old", "")), str(arguments.get("new", ""))
        if found is None:
            return f"# no diff: {path} does not exist, so the edit will fail"
        count = found.count(old) if old else 0
        if count != 1:
            said = "is empty" if not old else "is not found in the file" if not count else f"occurs {count} times"
            return f"# no diff: the text to replace {said}, so the edit will fail"
        at = found.index(old)
        after = found[:at] + new + found[at + len(old) :]
    else:
        after = str(arguments.get("content", ""))
    if len(after.encode()) > MAX_DIFFED_BYTES:
        return f"# no diff: the new {path} is {len(after.encode())} bytes, too large to diff here"
    return bounded(_unified(path, found, after))


class _NoDiff(Exception):
    """Why the file cannot be diffed."""


def _read(root: Path, path: str) -> str | None:
    """The file's text, or None when it does not exist yet; _NoDiff says why it cannot be diffed."""
    base = root.resolve()
    target = base / path
    try:
        resolved = target.resolve()
        if not resolved.is_relative_to(base):
            raise _NoDiff(f"{path} leads outside the project") from None
        info = os.stat(resolved)
    except FileNotFoundError:
        return None
    except (OSError, RuntimeError) as error:
        raise _NoDiff(f"{path} cannot be read ({getattr(error, 'strerror', None) or error})") from None
    if not stat.S_ISREG(info.st_mode):
        raise _NoDiff(f"{path} is not a regular file") from None
    if info.st_size > MAX_DIFFED_BYTES:
        raise _NoDiff(f"{path} is {info.st_size} bytes, too large to diff here") from None
    try:
        data = resolved.read_bytes()
    except OSError as error:
        raise _NoDiff(f"{path} cannot be read ({error.strerror})") from None
    if b"\0" in data:
        raise _NoDiff(f"{path} is a binary file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _NoDiff(f"{path} is not UTF-8 text") from None


def _lines(text: str) -> list[str]:
    """Lines as difflib takes them, each ending in a newline; a last line without one is marked
    as git marks it."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def _unified(path: str, before: str | None, after: str) -> str:
    if before == after:
        return f"# no change: the write leaves {path} as it is"
    header = f"diff --git a/{path} b/{path}\n"
    body = difflib.unified_diff(
        _lines(before or ""),
        _lines(after),
        fromfile="/dev/null" if before is None else f"a/{path}",
        tofile=f"b/{path}",
    )
    text = "".join(body)
    return header + text if text else header + f"# {path}: an empty file\n"


def bounded(diff: str) -> str:
    """The diff as an approval shows it: cut at a line before :data:`SHOWN_CHARS`, with a note
    of what is left out (any checkpoint showing a diff, e.g. of a child's whole work, uses it)."""
    if len(diff) <= SHOWN_CHARS:
        return diff
    shown = diff[: diff.rfind("\n", 0, SHOWN_CHARS) + 1] or diff[:SHOWN_CHARS]
    left = diff[len(shown) :].count("\n")
    return f"{shown}# ... {left} more lines of the diff not shown ({len(diff)} characters in all)\n"
