"""Write scopes on disk: resolved when a child is summoned, made when an agent starts.

A scope is checked and kept in its *resolved* form: symlinks followed (:func:`resolve_scope`), so
that ``a/link -> ../b`` is the scope ``b``, checked as ``b`` against the parent's scope and the
running siblings', and bound as ``b`` by the sandbox. A scope resolving outside the root is
refused, naming where it leads.

When an agent starts, before its servers do, what is missing of each of its scopes is made
(:func:`make_scopes`): the missing folders on its way, then the path itself, an empty file when
its name has a suffix (``hello.py``) and a folder otherwise (``src/newpkg``). A path must exist to
be bound writable in the sandbox; nothing but the scope's own chain is made, and nothing of an
always-denied one (``.mcp.json``, ``.dispatch/``, which stay unwritable anyway). The walk follows no
symlink: a scope that became one since it was resolved (a parent swapping a folder for a link) is
refused, not followed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from dispatch.hub.errors import DispatchError
from dispatch.hub.policy.paths import ROOT, normalize_path
from dispatch.servers import paths
from dispatch.servers.sandbox.openat2 import RESOLVE_NO_SYMLINKS, SAFE, openat2
from dispatch.servers.sandbox.policy import DeniedPaths

__all__ = ["ScopeError", "make_scopes", "resolve_scope"]


class ScopeError(DispatchError):
    """A scope that cannot be used as it is on disk; the message names it and why."""


def resolve_scope(root: Path, path: str) -> str:
    """The normalized root-relative ``path`` with its symlinks followed, root-relative again
    (``root`` resolved). Raises ValueError naming where it leads when that is outside the root."""
    real = Path(os.path.realpath(root / path))
    if not paths.covers(root, real):
        raise ValueError(f"{path!r} resolves to '{real}', outside the project root '{root}'")
    return normalize_path(real.relative_to(root).as_posix())


def make_scopes(root: Path, scopes: Iterable[str]) -> list[str]:
    """Make what is missing of each scope beneath ``root`` (see the module docstring); returns the
    root-relative paths it made. Raises ScopeError when a part is a symlink or a file."""
    made: list[str] = []
    denied = DeniedPaths.current(root)
    for scope in scopes:
        if scope != ROOT and denied.reason(root / scope, "write") is None:  # a denied one stays unwritable
            made += _make(root, scope)
    return made


def _make(root: Path, scope: str) -> list[str]:
    parts = scope.split("/")
    made: list[str] = []
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            here = "/".join(parts[: depth + 1])
            try:
                child = openat2(fd, part, os.O_PATH, resolve=SAFE | RESOLVE_NO_SYMLINKS)
            except FileNotFoundError:
                if last and PurePosixPath(part).suffix:
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                    os.close(os.open(part, flags, 0o666, dir_fd=fd))
                    return [*made, here]
                try:
                    os.mkdir(part, dir_fd=fd)
                    made.append(here)
                except FileExistsError:  # a sibling summoned at the same time made it
                    pass
                child = openat2(fd, part, os.O_PATH | os.O_DIRECTORY, resolve=SAFE | RESOLVE_NO_SYMLINKS)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.EXDEV):
                    raise ScopeError(
                        f"scope {scope!r}: '{here}' is a symlink now (it was resolved when the agent was "
                        "summoned); the scope is not followed through it"
                    ) from None
                raise ScopeError(f"scope {scope!r}: '{here}': {error.strerror}") from None
            os.close(fd)
            fd = child
            if not last and not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise ScopeError(f"scope {scope!r}: '{here}' is a file, not a folder")
    finally:
        os.close(fd)
    return made
