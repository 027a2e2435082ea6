"""Whether one path lies within another: the one rule, for the sandbox, the fs server and the hub.

Both paths must be in the same form: absolute and resolved (``~`` expanded, ``..`` collapsed,
links followed), or relative to the same folder, where ``.`` covers every relative path. The test
is part by part, never by bare string prefix: ``/a/bc`` is not within ``/a/b``. (It compares the
paths' normalised strings up to a separator, which is the same test part by part for POSIX paths,
without ``is_relative_to``'s cost: the fs server asks it for every path of every call.)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePath

__all__ = ["covered_by_any", "covers"]


def covers(top: PurePath, path: PurePath) -> bool:
    """Whether ``path`` is ``top`` or lies beneath it."""
    above, below = str(top), str(path)
    if below == above:
        return True
    if above == ".":  # the folder relative paths are relative to
        return not path.is_absolute()
    if below.startswith("//") or above.startswith("//"):  # POSIX's other root: as rare as it is odd
        return path.is_relative_to(top)
    return below.startswith(above if above.endswith("/") else above + "/")


def covered_by_any(path: PurePath, tops: Iterable[PurePath]) -> bool:
    """Whether ``path`` is one of ``tops`` or lies beneath one."""
    return any(covers(top, path) for top in tops)
