"""What the project's git ignore files leave out of ``grep`` and ``glob``: :class:`GitIgnores`.

The rules are git's (through ``pathspec``'s ``GitIgnoreSpec``): ``.git/info/exclude`` first, then
every ``.gitignore`` from the root down to a path's folder, a deeper file's match winning over a
shallower one's; a path inside an ignored folder is ignored whatever its own rules say (git never
looks inside such a folder). Each ignore file is read once, beneath the root's descriptor (never
through a symlink that leads out).
"""

from __future__ import annotations

import os
import posixpath
import stat

from pathspec import GitIgnoreSpec

from ..sandbox.openat2 import openat2

__all__ = ["MAX_IGNORE_BYTES", "GitIgnores"]

MAX_IGNORE_BYTES = 1024 * 1024
"""An ignore file larger than this is not read (its rules do not apply)."""
_EXCLUDE = ".git/info/exclude"


class GitIgnores:
    """The ignore rules of one tree, read beneath ``root_fd`` as they are needed."""

    def __init__(self, root_fd: int) -> None:
        self._root_fd = root_fd
        self._specs: dict[str, GitIgnoreSpec | None] = {}
        self._ignored_dirs: dict[str, bool] = {}

    def _read(self, rel: str) -> GitIgnoreSpec | None:
        """The rules of the ignore file at ``rel`` (root-relative), or None when there is none."""
        if rel not in self._specs:
            spec: GitIgnoreSpec | None = None
            try:
                fd = openat2(self._root_fd, rel, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                fd = -1
            if fd != -1:
                with os.fdopen(fd, "rb") as file:
                    info = os.fstat(file.fileno())
                    if stat.S_ISREG(info.st_mode) and info.st_size <= MAX_IGNORE_BYTES:
                        lines = file.read().decode("utf-8", errors="replace").splitlines()
                        spec = GitIgnoreSpec.from_lines(lines) if any(line.strip() for line in lines) else None
            self._specs[rel] = spec
        return self._specs[rel]

    def _own_rules(self, rel: str, is_dir: bool) -> bool:
        """Whether the rules themselves ignore ``rel`` (its folders not considered)."""
        verdict: bool | None = None
        shown = rel + "/" if is_dir else rel
        exclude = self._read(_EXCLUDE)
        if exclude is not None:
            verdict = _check(exclude, shown, verdict)
        parts = rel.split("/")
        for depth in range(len(parts)):
            folder = "/".join(parts[:depth])
            spec = self._read(posixpath.join(folder, ".gitignore") if folder else ".gitignore")
            if spec is not None:
                verdict = _check(spec, shown[len(folder) + 1 :] if folder else shown, verdict)
        return bool(verdict)

    def _dir_ignored(self, rel: str) -> bool:
        """Whether the folder ``rel`` is ignored, by its own rules or as part of an ignored folder."""
        if not rel or rel == ".":
            return False
        if rel not in self._ignored_dirs:
            parent = posixpath.dirname(rel)
            self._ignored_dirs[rel] = self._dir_ignored(parent) or self._own_rules(rel, is_dir=True)
        return self._ignored_dirs[rel]

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        """Whether the root-relative path ``rel`` (posix, no ``..``) is ignored: by its own rules
        or because a folder it is in is."""
        rel = posixpath.normpath(rel)
        if rel in ("", "."):
            return False
        if is_dir:
            return self._dir_ignored(rel)
        return self._dir_ignored(posixpath.dirname(rel)) or self._own_rules(rel, is_dir=False)


def _check(spec: GitIgnoreSpec, path: str, verdict: bool | None) -> bool | None:
    include = spec.check_file(path).include
    return verdict if include is None else include
