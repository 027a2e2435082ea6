"""Project instructions: ``AGENTS.md`` (the cross-tool standard) and ``CLAUDE.md`` files.

Those at the project root are read into every agent's system prompt, after Dispatch's rules and
before its skills; one in a subfolder is added for an agent whose write scope lies in that
subfolder (a scope ``web/app.py`` or ``web/`` reads ``web/AGENTS.md``), shallower ones first.
Each file is read when the agent starts, at most :data:`MAX_INSTRUCTIONS_BYTES` of it (a note
says where it was cut). A file that resolves outside the project, or to an always-denied path,
is not read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatch.hub.policy.paths import ROOT
from dispatch.servers.sandbox.policy import DeniedPaths

NAMES = ("AGENTS.md", "CLAUDE.md")
"""The file names read in the root and in the folders of an agent's write scope, in this order."""
MAX_INSTRUCTIONS_BYTES = 32 * 1024
"""What one file contributes at most; the rest is left out, with a note saying so."""


@dataclass(frozen=True)
class ProjectInstructions:
    """One instructions file as an agent reads it."""

    path: str
    """Root-relative, posix (``AGENTS.md``, ``web/CLAUDE.md``)."""
    text: str
    size: int
    """The file's size in bytes (more than ``len(text)`` when it was cut)."""

    @property
    def cut(self) -> bool:
        return self.size > MAX_INSTRUCTIONS_BYTES

    def render(self) -> str:
        """The file as a section of the system prompt."""
        note = (
            f"\n\n[{self.path} is {self.size:,} bytes: only its first {MAX_INSTRUCTIONS_BYTES:,} are here; "
            "read the file for the rest]"
            if self.cut
            else ""
        )
        return f"# Project instructions ({self.path})\n\n{self.text}{note}"


def render_instructions(files: Iterable[ProjectInstructions]) -> str:
    """The files as they follow Dispatch's rules in a system prompt."""
    return "\n\n".join(f.render() for f in files)


def _folders(root: Path, scope: Sequence[str]) -> list[str]:
    """The root-relative folders, shallowest first, whose files an agent writing ``scope`` reads:
    every folder from the root down to each scope path's own (its parent when it is a file)."""
    found: dict[str, None] = {"": None}
    for path in scope:
        if path in (ROOT, "", "."):
            continue
        parts = Path(path).parts
        if not (root / path).is_dir():
            parts = parts[:-1]
        for depth in range(1, len(parts) + 1):
            found.setdefault("/".join(parts[:depth]), None)
    return list(found)


_Key = tuple[str, int, int, int, int]
_read_before: dict[_Key, ProjectInstructions | None] = {}
"""Files read already, by path and what ``stat`` says of the file it leads to (a spawn reads the
same few files again and again; an edit, or a symlink pointed elsewhere, changes the key)."""


def _read(root: Path, rel: str) -> ProjectInstructions | None:
    lexical = root / rel
    try:
        info = os.stat(lexical)  # the usual case, and the cheap one: no such file
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    key = (str(lexical), info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
    if key not in _read_before:
        if len(_read_before) > 256:
            _read_before.clear()
        _read_before[key] = _read_now(root, rel, lexical)
    return _read_before[key]


def _read_now(root: Path, rel: str, lexical: Path) -> ProjectInstructions | None:
    real = Path(os.path.realpath(lexical))
    if not real.is_relative_to(root) or DeniedPaths.current(root).reason(real, "read") is not None:
        return None
    try:
        with real.open("rb") as file:
            data = file.read(MAX_INSTRUCTIONS_BYTES)
            size = os.fstat(file.fileno()).st_size
    except OSError:
        return None
    text = data.decode("utf-8", errors="ignore" if size > MAX_INSTRUCTIONS_BYTES else "replace").strip()
    return ProjectInstructions(rel, text, size) if text else None


def project_instructions(root: Path, scope: Sequence[str] = (ROOT,)) -> list[ProjectInstructions]:
    """The instructions files an agent working in ``root`` with write ``scope`` reads, in order:
    the root's, then each folder's down to its scope."""
    root = Path(os.path.realpath(root))
    found: list[ProjectInstructions] = []
    for folder in _folders(root, scope):
        for name in NAMES:
            read = _read(root, f"{folder}/{name}" if folder else name)
            if read is not None:
                found.append(read)
    return found


def subfolder_instructions(root: Path, limit: int = 200) -> list[str]:
    """Root-relative paths of the instructions files below the root (for listing them), at most
    ``limit``; hidden folders and those git usually ignores are not walked."""
    skip = {"node_modules", "__pycache__", "venv"}
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in skip)
        rel = Path(dirpath).relative_to(root).as_posix()
        if rel == ".":
            continue
        found += [f"{rel}/{name}" for name in NAMES if name in filenames]
        if len(found) >= limit:
            break
    return found[:limit]
