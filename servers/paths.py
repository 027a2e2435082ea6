"""Whether one path lies within another: the one rule, for the sandbox, the fs server and the hub.

Both paths must be in the same form: absolute and resolved (``~`` expanded, ``..`` collapsed,
links followed), or relative to the same folder, where ``.`` covers every relative path. The test
is part by part, never by string prefix: ``/a/bc`` is not within ``/a/b``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath

__all__ = ["covered_by_any", "covers"]


def covers(top: PurePath, path: PurePath) -> bool:
    """Whether ``path`` is ``top`` or lies beneath it."""
    return path.is_relative_to(top)


def covered_by_any(path: PurePath, tops: Iterable[PurePath]) -> bool:
    """Whether ``path`` is one of ``tops`` or lies beneath one."""
    return any(path.is_relative_to(top) for top in tops)
