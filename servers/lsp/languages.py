"""Which languages a project uses, and which language server (if any) serves each.

Its room: the table of known languages (markers, file extensions, candidate servers, install
hints), a bounded walk of the project root, and :func:`plan_servers`, which applies the config
overrides (:class:`~dispatch.servers.lsp.settings.LspSettings`) on top of detection. Nothing here
starts a process; the manager does that with the :class:`LaunchPlan` it gets.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatch.servers.lsp.settings import LanguageOverride, LspSettings

__all__ = [
    "LANGUAGES",
    "Language",
    "LaunchPlan",
    "default_search_path",
    "detect",
    "language_of",
    "plan_language",
    "plan_servers",
    "walk_sources",
]

SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "node_modules", ".venv", "venv", "__pycache__", ".mypy_cache", ".ruff_cache"}
    | {".pytest_cache", ".tox", ".nox", "target", "dist", "build", ".dispatch", ".next", ".cache"}
)
DETECT_MAX_FILES = 5000
"""Files the detection walk looks at before it stops; markers in the root are always seen."""


@dataclass(frozen=True, eq=False)
class Language:
    """One language Dispatch knows how to serve (one instance each, compared by identity)."""

    key: str
    """The name in config and tool output: ``python``, ``typescript``, ``go``, ``rust``."""
    markers: tuple[str, ...]
    extensions: dict[str, str]
    """File suffix -> LSP ``languageId``."""
    servers: tuple[str, ...]
    """Candidate server programs, in order of preference."""
    install: str


LANGUAGES: tuple[Language, ...] = (
    Language(
        "python",
        ("pyproject.toml", "setup.py", "setup.cfg"),
        {".py": "python", ".pyi": "python"},
        ("pyright-langserver", "basedpyright-langserver", "pylsp"),
        "pip install pyright (needs Node.js), or pip install python-lsp-server pyflakes pycodestyle",
    ),
    Language(
        "typescript",
        ("package.json", "tsconfig.json", "jsconfig.json"),
        {
            ".ts": "typescript",
            ".mts": "typescript",
            ".cts": "typescript",
            ".tsx": "typescriptreact",
            ".js": "javascript",
            ".mjs": "javascript",
            ".cjs": "javascript",
            ".jsx": "javascriptreact",
        },
        ("typescript-language-server",),
        "npm install -g typescript-language-server typescript",
    ),
    Language("go", ("go.mod",), {".go": "go"}, ("gopls",), "go install golang.org/x/tools/gopls@latest"),
    Language("rust", ("Cargo.toml",), {".rs": "rust"}, ("rust-analyzer",), "rustup component add rust-analyzer"),
)


@dataclass(frozen=True)
class LaunchPlan:
    """What the manager should run for one language of one project, or why nothing."""

    language: Language
    detected_by: str | None
    """What showed the language is used (``"pyproject.toml"``, ``"a *.py file"``), or None."""
    server: str | None = None
    """The server's display name, e.g. ``pyright-langserver``."""
    command: tuple[str, ...] | None = None
    from_config: bool = False
    problem: str | None = None
    """Why no server runs for this language: missing, disabled, or a bad configured command."""
    init_options: dict[str, Any] = field(default_factory=dict[str, Any])
    settings: dict[str, Any] = field(default_factory=dict[str, Any])


def language_of(path: Path) -> tuple[Language, str] | None:
    """The language of a file and its LSP ``languageId``, by suffix."""
    suffix = path.suffix.lower()
    for language in LANGUAGES:
        if suffix in language.extensions:
            return language, language.extensions[suffix]
    return None


def walk_sources(top: Path, root: Path, limit: int) -> Iterator[Path]:
    """Files under ``top`` with a known suffix, sorted, skipping vendored and cache folders and
    anything that resolves outside ``root``; at most ``limit`` files are looked at."""
    seen = 0
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            seen += 1
            if seen > limit:
                return
            path = Path(dirpath, name)
            if language_of(path) is not None and Path(os.path.realpath(path)).is_relative_to(root):
                yield path


def detect(root: Path) -> dict[str, str]:
    """The languages the project at ``root`` uses: language key -> what showed it."""
    found: dict[str, str] = {}
    for language in LANGUAGES:
        marker = next((m for m in language.markers if (root / m).is_file()), None)
        if marker is not None:
            found[language.key] = marker
    for path in walk_sources(root, root, DETECT_MAX_FILES):
        match = language_of(path)
        if match is not None and match[0].key not in found:
            found[match[0].key] = f"a *{path.suffix} file ({path.relative_to(root).as_posix()})"
        if len(found) == len(LANGUAGES):
            break
    return found


def default_search_path() -> str:
    """PATH, then the folder of this Python (a virtualenv's tools count even when not activated)."""
    return os.pathsep.join(p for p in (os.environ.get("PATH", ""), str(Path(sys.executable).parent)) if p)


def _bundled_pyright(search_path: str) -> tuple[str, ...] | None:
    """``node .../langserver.index.js --stdio`` when the pyright PyPI package is installed here:
    the same server as its ``pyright-langserver`` wrapper, without the wrapper's version check."""
    spec = importlib.util.find_spec("pyright")
    node = shutil.which("node", path=search_path)
    if spec is None or spec.origin is None or node is None:
        return None
    script = Path(spec.origin).parent / "dist" / "langserver.index.js"
    return (node, str(script), "--stdio") if script.is_file() else None


def _find_server(language: Language, search_path: str) -> tuple[str, tuple[str, ...]] | None:
    for name in language.servers:
        if name == "pyright-langserver" and (bundled := _bundled_pyright(search_path)):
            return name, bundled
        program = shutil.which(name, path=search_path)
        if program is not None:
            return name, (program,) if name in ("pylsp", "gopls", "rust-analyzer") else (program, "--stdio")
    return None


def _plan(language: Language, detected_by: str | None, setting: LanguageOverride, search_path: str) -> LaunchPlan:
    def plan(server: str | None, command: tuple[str, ...] | None, problem: str | None = None) -> LaunchPlan:
        configured = setting.command is not None
        return LaunchPlan(
            language, detected_by, server, command, configured, problem, setting.init_options, setting.settings
        )

    if setting.command is None:
        found = _find_server(language, search_path)
        if found is None:
            tried = ", ".join(language.servers)
            return plan(
                None, None, f"no {language.key} language server found (looked for {tried}); install: {language.install}"
            )
        return plan(*found)
    program, *args = setting.command
    resolved = shutil.which(program, path=search_path)
    if resolved is None:
        where = f"config lsp.{language.key}.command"
        return plan(
            Path(program).name, None, f"the configured {language.key} server {program!r} ({where}) is not found"
        )
    return plan(Path(program).name, (resolved, *args))


def plan_language(
    language: Language, settings: LspSettings, search_path: str | None = None, detected_by: str | None = None
) -> LaunchPlan:
    """The plan of one language: the configured or detected server, or why there is none."""
    setting = settings.for_language(language.key)
    if setting is False:
        problem = f"{language.key} is turned off in the config (lsp.{language.key}: false)"
        return LaunchPlan(language, detected_by, problem=problem, from_config=True)
    override = setting if isinstance(setting, LanguageOverride) else LanguageOverride()
    return _plan(language, detected_by, override, default_search_path() if search_path is None else search_path)


def plan_servers(root: Path, settings: LspSettings, search_path: str | None = None) -> list[LaunchPlan]:
    """A plan for every language detected in ``root`` or configured with a command."""
    found = detect(root)
    plans: list[LaunchPlan] = []
    for language in LANGUAGES:
        setting = settings.for_language(language.key)
        configured = isinstance(setting, LanguageOverride) and setting.command is not None
        if language.key in found or configured:
            plans.append(plan_language(language, settings, search_path, found.get(language.key)))
    return plans
