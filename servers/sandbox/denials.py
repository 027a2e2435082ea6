"""Reading a sandboxed command's output for what the sandbox refused it: a path to write, a path
to read that the sandbox hides, or the network. Each becomes a :class:`Need` to ask the user for.

The kernel's refusals reach the output as the error texts of ``EROFS`` (a read-only bind),
``EACCES`` (Landlock), ``ENOENT`` (a path under a private tmpfs) and ``ENETUNREACH``, a failed
name lookup or (Landlock alone) a refused ``connect`` (no network). A path the command cannot
see is asked for ``read`` first (its parent, when it does not exist yet); a path it sees but may
not change, ``write``. Tools quote paths in several ways (``'x'``, ``‘x’``, ``"x"``,
``x: error``); every path-looking token on such a line is a candidate (bash's ``/dev/tcp/...``
excepted), kept only when widening the sandbox by it could change the outcome.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dispatch.servers.hublink import Operation

from .policy import NETWORK

__all__ = ["Need", "find_needs"]

MAX_NEEDS = 3
_WRITE_ERRORS = ("Read-only file system", "Permission denied", "Operation not permitted")
_HIDDEN_ERRORS = ("No such file or directory",)
_NETWORK_ERRORS = (
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Could not resolve host",
    "Name or service not known",
    "No address associated with hostname",
    "getaddrinfo failed",
    "connect: Permission denied",
)
_QUOTED = re.compile(r"'([^'\n]+)'|‘([^’\n]+)’|\"([^\"\n]+)\"|`([^'\n]+)'")
_BEFORE_COLON = re.compile(r"(?:^|\s)([~/.][^\s:'\"‘’]*|[^\s:'\"‘’]+/[^\s:'\"‘’]*): ")
_AFTER_WORD = re.compile(r"(?:file|directory|open|create|access)\s+(/[^\s:'\"‘’]+)")


@dataclass(frozen=True)
class Need:
    """A path (absolute, or :data:`NETWORK`) and what the command needed to do with it."""

    path: str
    op: Operation


def _candidates(line: str) -> list[str]:
    found = [next(g for g in m.groups() if g) for m in _QUOTED.finditer(line)]
    found += [m.group(1) for m in _BEFORE_COLON.finditer(line)]
    found += [m.group(1) for m in _AFTER_WORD.finditer(line)]
    paths = [c for c in dict.fromkeys(found) if "/" in c or c.startswith(("~", "."))]
    return [c for c in paths if not c.startswith(("/dev/tcp/", "/dev/udp/"))]  # bash's sockets, not files


def _absolute(candidate: str, root: Path, home: Path) -> Path:
    if candidate == "~" or candidate.startswith("~/"):
        candidate = str(home) + candidate[1:]
    return Path(os.path.normpath(root / candidate))


def _existing(path: Path) -> Path:
    """``path`` if it exists, else its nearest existing ancestor (what a bind can name)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def find_needs(
    text: str,
    root: Path,
    home: Path,
    writable: Callable[[Path], bool],
    visible: Callable[[Path], bool],
) -> list[Need]:
    """The needs the output shows, in order, at most :data:`MAX_NEEDS`.

    ``writable(path)``: the sandbox already lets the command write there (widening cannot help);
    ``visible(path)``: the command could already see it.
    """
    needs: list[Need] = []
    for line in text.splitlines():
        if any(e in line for e in _NETWORK_ERRORS):
            needs.append(Need(NETWORK, "execute"))
            continue
        write = any(e in line for e in _WRITE_ERRORS)
        if not (write or any(e in line for e in _HIDDEN_ERRORS)):
            continue
        for candidate in _candidates(line):
            path = _absolute(candidate, root, home)
            if not visible(path):  # first to see it: a write there is asked for once it is seen
                if path.exists():
                    needs.append(Need(str(path), "read"))
                elif path.parent.is_dir():
                    needs.append(Need(str(path.parent), "read"))
            elif write and not writable(path):
                needs.append(Need(str(_existing(path)), "write"))
    return list(dict.fromkeys(needs))[:MAX_NEEDS]
