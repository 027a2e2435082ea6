"""Paths in grants: root-relative posix strings, ``"."`` for the whole project root.

What "covers" means is :mod:`dispatch.servers.paths`' rule (part by part, never by string
prefix); here it is applied to the grants' canonical strings (:func:`normalize_path`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from dispatch.servers import paths

__all__ = ["ROOT", "covered_by_any", "covers", "normalize_path", "overlaps"]

ROOT = "."


def normalize_path(path: str) -> str:
    """A root-relative path in canonical form (``"."``, ``"src"``, ``"src/app.py"``).

    Raises ValueError for absolute paths and paths that climb out with ``..``.
    """
    raw = path.strip()
    if not raw:
        raise ValueError("an empty path is not a scope; use '.' for the whole project root")
    pure = PurePosixPath(raw.replace("\\", "/"))
    if pure.is_absolute():
        raise ValueError(f"path {path!r} is absolute; grants take paths relative to the project root")
    parts = [p for p in pure.parts if p not in (".", "")]
    if ".." in parts:
        raise ValueError(f"path {path!r} climbs out of the project root with '..'")
    return "/".join(parts) or ROOT


def covers(container: str, path: str) -> bool:
    """Whether ``container`` includes ``path`` (both normalized)."""
    return paths.covers(PurePosixPath(container), PurePosixPath(path))


def overlaps(a: str, b: str) -> bool:
    """Whether two normalized paths share any file."""
    return covers(a, b) or covers(b, a)


def covered_by_any(path: str, containers: Iterable[str]) -> bool:
    """Whether one of ``containers`` includes ``path`` (all normalized)."""
    return paths.covered_by_any(PurePosixPath(path), map(PurePosixPath, containers))
