"""What no agent may touch whatever its grants, and the environment a process Dispatch starts may see.

Always denied: Dispatch's own data directory and config (global and the project's
``.dispatch/``), ``~/.ssh``, ``~/.aws``, ``~/.gnupg``, the shell's rc files, ``.mcp.json``
anywhere in a project, and inside any git directory whatever is not git's own working data
(:func:`git_part`: config and hooks are not even readable): the places where a write turns into
code the user runs later, or a read turns into a credential, or an agent grants itself more. The
fs server refuses them; the sandbox hides them or binds them read-only, and removes those a
command creates (:meth:`DeniedPaths.present` finds them); the hub's access gate answers no
without asking anyone.

Access requests name a path and an operation; two targets are not paths: :data:`NETWORK` (the
shell's network) and :func:`command_target` (one command run without a sandbox).
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dispatch.servers.hublink import Operation
from dispatch.servers.paths import covers

__all__ = [
    "HOME_DENIED",
    "MAX_SCANNED_DIRS",
    "NETWORK",
    "PROJECT_DENIED",
    "DeniedPaths",
    "GitPart",
    "Present",
    "command_target",
    "git_part",
    "is_pseudo_target",
    "scrub_environment",
]

NETWORK = "network"
"""The target of a request for the shell's network (operation ``execute``)."""

HOME_DENIED: tuple[tuple[str, str], ...] = (
    (".ssh", "SSH keys"),
    (".aws", "AWS credentials"),
    (".gnupg", "GnuPG keys"),
    (".config/dispatch", "Dispatch's own config"),
    (".bashrc", "a shell rc file"),
    (".bash_profile", "a shell rc file"),
    (".bash_login", "a shell rc file"),
    (".bash_logout", "a shell rc file"),
    (".profile", "a shell rc file"),
    (".zshrc", "a shell rc file"),
    (".zshenv", "a shell rc file"),
    (".zprofile", "a shell rc file"),
    (".zlogin", "a shell rc file"),
    (".zlogout", "a shell rc file"),
    (".config/fish", "a shell rc file"),
)
"""Paths under the home directory, with the reason given when one is refused."""

PROJECT_DENIED: tuple[tuple[str, str], ...] = (
    (".mcp.json", "MCP clients start the servers it lists"),
    (".dispatch", "Dispatch's project config and templates"),
)
"""Names refused wherever they occur inside a project (nested directories too)."""

GitPart = Literal["secret", "frozen", "way", "work"]
"""What a path inside a git directory is to an agent (:func:`git_part`)."""

_GIT_SECRET = frozenset({"config", "config.worktree", "hooks"})
_GIT_WORK_DIRS = frozenset(
    {"refs", "logs", "rebase-merge", "rebase-apply", "sequencer", "rr-cache", "reftable", "lfs", "NOTES_MERGE_WORKTREE"}
)
_GIT_WORK_FILES = frozenset(
    {
        "HEAD", "index", "ORIG_HEAD", "FETCH_HEAD", "MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "MERGE_RR",
        "MERGE_AUTOSTASH", "AUTO_MERGE", "CHERRY_PICK_HEAD", "REVERT_HEAD", "REBASE_HEAD", "COMMIT_EDITMSG",
        "TAG_EDITMSG", "SQUASH_MSG", "NOTES_MERGE_PARTIAL", "NOTES_MERGE_REF", "packed-refs", "shallow",
        "description", "gc.pid", "gc.log",
    }
)  # fmt: skip
_GIT_WORK_PREFIXES = ("BISECT_", "index.stash.", "next-index-")
_GIT_INFO_WORK = frozenset({"exclude", "refs", "sparse-checkout"})
_GIT_ALTERNATES = frozenset({"alternates", "http-alternates"})
_GIT_NESTED = frozenset({"modules", "worktrees"})
_GIT_REASONS: dict[GitPart, str] = {
    "secret": "git config and hooks name programs git runs, and config holds remote credentials",
    "frozen": "in a git directory only git's working data (objects, refs, index, HEAD, logs, ...) is"
    " writable: the rest redirects git or names what it runs",
}


def git_part(rest: Sequence[str]) -> GitPart:
    """What the path ``.git/<rest...>`` is to an agent, in any git directory (nested repositories,
    submodules' ``.git/modules/<name>``, worktrees' ``.git/worktrees/<name>``, to any depth):

    * ``work``: git's working data, which ordinary work (``add``, ``commit``, ``checkout``,
      ``branch``, ``stash``, ``merge``, ``rebase``, ``cherry-pick``, ``fetch``, ``gc``, ``bisect``)
      writes: ``objects/`` (but ``objects/info/alternates`` and ``http-alternates``), ``refs/``,
      ``logs/``, ``reftable/``, the state directories of a merge, rebase, ``am`` or sequencer,
      ``rr-cache/``, ``lfs/``; ``HEAD``, ``index``, ``packed-refs``, ``shallow``, ``ORIG_HEAD``,
      ``FETCH_HEAD``, the ``MERGE_*``, ``*_HEAD`` and ``BISECT_*`` files, ``COMMIT_EDITMSG`` and
      the other messages, ``description``, ``gc.pid``/``gc.log``, temporary indexes and every
      ``*.lock`` (git never reads a lock file as the file it locks); ``info/exclude``,
      ``info/refs`` and ``info/sparse-checkout``. None of it names a program or another place to
      read git's settings from.
    * ``way``: a directory on the way to such data (``objects``, ``objects/info``, ``info``,
      ``modules/<name>``, ``worktrees/<name>``): it may be created, its entries are judged one by one.
    * ``secret``: ``config``, ``config.worktree`` and ``hooks/``: they name programs git runs
      (``core.fsmonitor``, ``core.pager``, hooks, filters) and config holds remote credentials, so
      they are neither read nor written.
    * ``frozen``: everything else, readable but not writable: ``commondir`` and ``gitdir`` (which
      point git at another git directory, whose config then applies), the alternates (objects from
      elsewhere), ``info/attributes`` and ``info/grafts`` (which programs run on which files,
      history rewritten), and any name git work does not need. A ``.git`` itself (``rest`` empty)
      is frozen as a file: a ``gitdir:`` file or symlink redirects git; as a directory it is a git
      directory, judged by its entries.

    Submodule names with a ``/`` are not told apart from a git directory's own entries: their git
    directories are frozen as a whole (their config and hooks stay secret)."""
    if not rest:
        return "frozen"
    while rest[0] in _GIT_NESTED:
        if len(rest) <= 2:
            return "way"
        rest = rest[2:]
    head, last = rest[0], len(rest) == 1
    if last and head.endswith(".lock"):
        return "work"
    if head in _GIT_SECRET:
        return "secret"
    if head == "objects":
        if last or rest[1] != "info":
            return "way" if last else "work"
        return "way" if len(rest) == 2 else "frozen" if rest[2] in _GIT_ALTERNATES else "work"
    if head == "info":
        return "way" if last else "work" if len(rest) == 2 and rest[1] in _GIT_INFO_WORK else "frozen"
    if head in _GIT_WORK_DIRS or (last and (head in _GIT_WORK_FILES or head.startswith(_GIT_WORK_PREFIXES))):
        return "work"
    return "secret" if _GIT_SECRET.intersection(rest) else "frozen"


def _git_kind(parts: Sequence[str]) -> GitPart | None:
    """The strictest :func:`git_part` over every ``.git`` in ``parts``; None outside git dirs."""
    kinds = {git_part(parts[at + 1 :]) for at, part in enumerate(parts) if part == ".git"}
    strictest: tuple[GitPart, ...] = ("secret", "frozen", "way", "work")
    return next((kind for kind in strictest if kind in kinds), None)


_WATCHED = frozenset({name for name, _ in PROJECT_DENIED} | {".git"})
"""The names a walk looks at outside git directories."""

MAX_SCANNED_DIRS = 20_000
"""How many directories :meth:`DeniedPaths.present` lists at most (the rest goes unchecked)."""


_CTIME_SLACK_NS = 1_000_000_000
"""A directory whose ``ctime`` is this close to when it was listed is listed again next time: a
change in the same timestamp tick as the listing would not move its ``ctime``."""


@dataclass
class Present:
    """The always-denied paths that exist in a project now, each with its identity (device,
    inode), found by a walk of at most :data:`MAX_SCANNED_DIRS` directories."""

    hidden: dict[Path, tuple[int, int]] = field(default_factory=dict[Path, tuple[int, int]])
    """Neither read nor written: git config and hooks, ``.mcp.json``, ``.dispatch/``."""
    frozen: dict[Path, tuple[int, int]] = field(default_factory=dict[Path, tuple[int, int]])
    """Read but not written: the rest of a git directory outside git's working data, ``.git`` files."""
    git_dirs: list[Path] = field(default_factory=list[Path])
    """Every ``.git`` directory found."""
    complete: bool = True
    """False when the walk stopped at its cap."""
    listed: dict[str, tuple[int, bool]] = field(default_factory=dict[str, tuple[int, bool]])
    """Each directory listed: its ``st_ctime_ns`` taken just before (``ctime`` moves with every
    entry added, removed or renamed, and no one can set it back), and whether it is in a git
    directory. What :meth:`DeniedPaths.refreshed` starts from."""
    listed_at_ns: int = 0

    def identities(self) -> dict[Path, tuple[int, int]]:
        return {**self.hidden, **self.frozen}


def command_target(command: str) -> str:
    """The target of a request to run one command without a sandbox (``sandbox: off``)."""
    return f"$ {command}"


def is_pseudo_target(target: str) -> bool:
    """Whether an access target is not a filesystem path (the network, an unsandboxed command)."""
    return target == NETWORK or target.startswith("$ ")


def _data_dir(env: Mapping[str, str], home: Path) -> Path:
    configured = env.get("DISPATCH_HOME")
    return Path(configured).expanduser() if configured else home / ".local" / "share" / "dispatch"


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


RESOLVED_FOR_S = 1.0
"""How long a resolved always-denied set is reused for the same home, data dir and root."""
_RESOLVED: dict[tuple[str, Path, Path | None], tuple[float, DeniedPaths]] = {}
"""A memo of :meth:`DeniedPaths.current` (at most :data:`RESOLVED_FOR_S` old), not state."""


@dataclass(frozen=True)
class DeniedPaths:
    """The always-denied set for one user (home, data dir) and one project root, all resolved."""

    home: Path
    absolute: tuple[tuple[Path, str], ...]
    root: Path | None = None

    @classmethod
    def current(cls, root: Path | None = None, env: Mapping[str, str] | None = None) -> DeniedPaths:
        """The set for the user this process runs as (``$HOME``, ``$DISPATCH_HOME``).

        Resolving it takes some fifty ``realpath`` calls, and every agent's fs scope and sandbox
        asks for it when it spawns; a burst of spawns within :data:`RESOLVED_FOR_S` shares one
        resolution (a set is resolved when an agent spawns in any case, not at each access)."""
        env = os.environ if env is None else env
        given_home = Path(env.get("HOME") or Path.home())
        data = _data_dir(env, given_home)
        key = (str(given_home), data, root)
        now = time.monotonic()
        cached = _RESOLVED.get(key)
        if cached is not None and now - cached[0] < RESOLVED_FOR_S:
            return cached[1]
        home = _real(given_home)
        listed = [(home / rel, why) for rel, why in HOME_DENIED]
        listed.append((data, "Dispatch's own data directory"))
        absolute = tuple((_real(p), why) for p, why in listed)
        resolved = cls(home, absolute, _real(root) if root is not None else None)
        if len(_RESOLVED) > 64:
            _RESOLVED.clear()
        _RESOLVED[key] = (now, resolved)
        return resolved

    def reason(self, path: Path, op: Operation) -> str | None:
        """Why ``op`` on ``path`` (absolute and resolved) is always denied, or None when it is not
        (``write`` means writing a file at ``path``; the directories on the way are judged by what
        goes in them)."""
        for denied, why in self.absolute:
            if covers(denied, path):
                return f"'{path}' is always denied ({why}: {denied})"
        inside = self.root is None or covers(self.root, path)
        parts = path.relative_to(self.root).parts if self.root is not None and inside else path.parts
        for name, why in PROJECT_DENIED:
            if inside and name in parts:
                return f"'{path}' is always denied ({why})"
        kind = _git_kind(parts)
        if kind == "secret" or (kind == "frozen" and op == "write"):
            return f"'{path}' is always denied ({_GIT_REASONS[kind]})"
        return None

    def in_root(self) -> list[tuple[Path, str]]:
        """The project's own always-denied paths at its top level, whether they exist or not (what
        a command under Landlock alone is put back from): ``.mcp.json``, ``.dispatch``, and the
        root repository's config and hooks."""
        if self.root is None:
            return []
        own = [(self.root / name, why) for name, why in PROJECT_DENIED]
        return own + [(self.root / ".git" / name, _GIT_REASONS["secret"]) for name in sorted(_GIT_SECRET)]

    def present(self, limit: int = MAX_SCANNED_DIRS) -> Present:
        """The always-denied paths that exist in the project now, at any depth, symlinks not
        followed; inside a git directory only its ``way`` directories are listed (git's working
        data, which may be large, is allowed whatever it holds)."""
        found = Present(listed_at_ns=time.time_ns())
        if self.root is None:
            return found
        return self._walk(found, deque([(str(self.root), False)]), set[str](), limit)

    def refreshed(self, before: Present, limit: int = MAX_SCANNED_DIRS) -> Present:
        """What :meth:`present` would find now, listing again only the directories whose
        ``ctime`` moved since ``before`` was taken (an entry made, removed or renamed in one moves
        its ``ctime``; a ``touch`` to hide that moves it too), and those that changed just before
        they were listed (timestamps are coarser than the clock). A stat per directory instead
        of a listing: a large project's walk costs a fraction of a full one."""
        if self.root is None or not before.complete or not before.listed:
            return self.present(limit)
        found = Present(listed_at_ns=time.time_ns())
        recent = before.listed_at_ns - _CTIME_SLACK_NS
        again: deque[tuple[str, bool]] = deque()
        for directory, (ctime, in_git) in before.listed.items():
            try:
                now = os.stat(directory, follow_symlinks=False)
            except OSError:
                continue  # gone, and what was in it
            if now.st_ctime_ns == ctime and ctime < recent and stat.S_ISDIR(now.st_mode):
                found.listed[directory] = (ctime, in_git)
            elif stat.S_ISDIR(now.st_mode):
                again.append((directory, in_git))
        unchanged = found.listed
        found.hidden = {p: i for p, i in before.hidden.items() if str(p.parent) in unchanged}
        found.frozen = {p: i for p, i in before.frozen.items() if str(p.parent) in unchanged}
        found.git_dirs = [g for g in before.git_dirs if str(g.parent) in unchanged]
        return self._walk(found, again, set(before.listed), limit - len(unchanged))

    def _walk(self, found: Present, queue: deque[tuple[str, bool]], known: set[str], limit: int) -> Present:
        """List the directories of ``queue`` and every new one beneath them (``known`` ones are
        queued by the caller or kept as they were), recording what is denied into ``found``."""
        listed = 0
        while queue:
            directory, in_git = queue.popleft()
            listed += 1
            if listed > limit:
                found.complete = False
                break
            try:
                found.listed[directory] = (os.stat(directory, follow_symlinks=False).st_ctime_ns, in_git)
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if in_git or entry.name in _WATCHED:
                            self._sort(entry, in_git, found, queue, known)
                        elif entry.path not in known and entry.is_dir(follow_symlinks=False):
                            queue.append((entry.path, False))
            except OSError:
                continue
        return found

    def _sort(
        self, entry: os.DirEntry[str], in_git: bool, found: Present, queue: deque[tuple[str, bool]], known: set[str]
    ) -> None:
        """An entry of the walk with a watched name, or in a git directory: record it if denied,
        queue it if it is a directory that may hold denied paths (and is not ``known``)."""
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            identity = (entry.stat(follow_symlinks=False).st_dev, entry.inode())
        except OSError:
            return
        path = Path(entry.path)
        if entry.name == ".git" and is_dir and not in_git:
            found.git_dirs.append(path)
            if entry.path not in known:
                queue.append((entry.path, True))
        elif self.reason(path, "read") is not None:
            found.hidden[path] = identity
        elif self.reason(path, "write") is not None:
            found.frozen[path] = identity
        elif (
            is_dir
            and entry.path not in known
            and self.root is not None
            and _git_kind(path.relative_to(self.root).parts) == "way"
        ):
            queue.append((entry.path, True))


# ---- the environment -----------------------------------------------------------------------

_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "COOKIE", "SESSION", "JWT")
_AUTH = re.compile(r"AUTH(?!OR(?:_|S?$))")  # OAUTH, AUTHORIZATION, ... but not GIT_AUTHOR_NAME
_SECRET_PARTS = frozenset({"PAT", "PASS", "PW", "PWD", "DSN", "CREDS", "BEARER"})
"""Whole parts of a name (between ``_``, ``-`` or ``.``): GH_PAT, DB_PASS, SENTRY_DSN; the
variable ``PWD`` alone is the working directory, not a password."""
_SECRET_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_APPLICATION", "DISPATCH_", "SSH_", "GPG_", "KUBECONFIG", "DOCKER_")
_URL_WITH_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s@]+@", re.IGNORECASE)
"""A URL with a user part (``https://KEY@host``, ``https://user:password@host``): often a credential."""


def _secret_name(upper: str) -> bool:
    if any(w in upper for w in _SECRET_WORDS) or upper.startswith(_SECRET_PREFIXES) or _AUTH.search(upper):
        return True
    return upper not in ("PWD", "OLDPWD") and any(part in _SECRET_PARTS for part in re.split(r"[_.\-]+", upper))


def scrub_environment(env: Mapping[str, str], keep: Sequence[str] = ()) -> dict[str, str]:
    """``env`` without credentials: names with KEY, TOKEN, SECRET, PASSWORD, AUTH, JWT, ... (any
    case) or with a part PAT, PASS, DSN, ... (``GH_PAT``), cloud and agent variables (``AWS_*``,
    ``SSH_AUTH_SOCK``, ``DISPATCH_*``, ...), and any value that is a URL with a user part
    (``https://KEY@host``, with or without a password). ``keep`` names survive whatever they are called.

    The one environment rule for every process Dispatch starts for its agents: shell commands
    (sandboxed or not), stdio tool servers, language servers and outside MCP servers."""
    kept: dict[str, str] = {}
    for name, value in env.items():
        if name in keep or not (_secret_name(name.upper()) or _URL_WITH_USERINFO.search(value)):
            kept[name] = value
    return kept
