"""What no agent may touch whatever its grants, and the environment a process Dispatch starts may see.

Always denied: Dispatch's own data directory and config (global and the project's
``.dispatch/``), ``~/.ssh``, ``~/.aws``, ``~/.gnupg``, the shell's rc files, and inside a project
``.git/hooks``, ``.git/config`` and ``.mcp.json``: the places where a write turns into code the
user runs later, or a read turns into a credential. The fs server refuses them; the sandbox
hides them; the hub's access gate answers no without asking anyone.

Access requests name a path and an operation; two targets are not paths: :data:`NETWORK` (the
shell's network) and :func:`command_target` (one command run without a sandbox).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatch.servers.paths import covers

__all__ = [
    "HOME_DENIED",
    "NETWORK",
    "PROJECT_DENIED",
    "DeniedPaths",
    "command_target",
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

PROJECT_DENIED: tuple[tuple[tuple[str, ...], str], ...] = (
    ((".git", "hooks"), "git hooks run on the user's next commit"),
    ((".git", "config"), "git config can name programs to run, and holds remote credentials"),
    ((".mcp.json",), "MCP clients start the servers it lists"),
    ((".dispatch",), "Dispatch's project config and templates"),
)
"""Path parts refused wherever they occur inside a project (nested repositories too)."""


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

    def reason(self, path: Path) -> str | None:
        """Why ``path`` (absolute and resolved) is always denied, or None when it is not."""
        for denied, why in self.absolute:
            if covers(denied, path):
                return f"'{path}' is always denied ({why}: {denied})"
        parts = path.parts
        for pattern, why in PROJECT_DENIED:
            size = len(pattern)
            for at in range(len(parts) - size + 1):
                if parts[at : at + size] == pattern and self._in_project(path):
                    return f"'{path}' is always denied ({why})"
        return None

    def _in_project(self, path: Path) -> bool:
        return self.root is None or covers(self.root, path)

    def in_root(self) -> list[Path]:
        """The project's own always-denied paths (at its top level), whether they exist or not."""
        if self.root is None:
            return []
        return [self.root.joinpath(*pattern) for pattern, _ in PROJECT_DENIED]


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
