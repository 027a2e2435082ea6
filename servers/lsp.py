"""The ``lsp`` tool server: diagnostics from the project's language servers, and what serves which
language.

Its room: the MCP face only. The language servers themselves are owned by a backend it is given
(:class:`LspBackend`; the hub's ``dispatch.hub.lsp.manager.LspManager`` shares one server process per
project and language among all agents), so this module knows nothing of processes or of the hub.
The hub builds one instance per agent with :func:`build_server`; ``python -m
dispatch.servers.lsp --root DIR`` serves the same tools over stdio with a manager of its own.
Paths go through the ``fs`` server's :class:`~dispatch.servers.fs_scope.FsScope`: outside the root is
refused. The data shapes that cross the line to the backend live here too.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal, Protocol

import anyio
from mcp_types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._base import ServerPlan, ToolError, ToolList, builds, existing_root, root_argument
from .fs_scope import FsScope

__all__ = [
    "Diagnostic",
    "DiagnosticsReport",
    "LanguageInfo",
    "LanguagesReport",
    "LspBackend",
    "LspError",
    "build_server",
    "main",
]

Severity = Literal["error", "warning", "information", "hint"]
_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)


class LspError(Exception):
    """An expected failure the tool reports to the model as it is: no server for a language, a
    server that does not answer in time, a file that is not there."""


class Diagnostic(BaseModel):
    """One problem a language server reports."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(description="path relative to the project root")
    line: int = Field(ge=1, description="1-based line")
    column: int = Field(ge=1, description="1-based column, in characters")
    severity: Severity
    source: str | None = Field(default=None, description="the tool that found it, e.g. 'Pyright'")
    code: str | None = Field(default=None, description="the rule, e.g. 'reportAttributeAccessIssue'")
    message: str


class DiagnosticsReport(BaseModel):
    """The diagnostics of the files asked for, as of their contents on disk now."""

    model_config = ConfigDict(extra="forbid")

    diagnostics: list[Diagnostic] = Field(default_factory=list[Diagnostic])
    files_checked: int = 0
    notes: list[str] = Field(default_factory=list[str], description="what was left out, and why")


class LanguageInfo(BaseModel):
    """One language of the project and the server that serves it, or why none does."""

    model_config = ConfigDict(extra="forbid")

    language: str
    detected_by: str | None = Field(description="what showed the language is used; None: only configured")
    server: str | None
    command: list[str] | None
    configured: bool = Field(description="whether the config file chose or turned off the server")
    status: str = Field(description="'running (pid N)', 'starts on first use', or why it is unavailable")


class LanguagesReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    languages: list[LanguageInfo]
    note: str | None = None


class LspBackend(Protocol):
    """What the server needs of whoever runs the language servers."""

    async def diagnostics(self, root: Path, target: Path | None) -> DiagnosticsReport:
        """Diagnostics of ``target`` (a file or directory inside ``root``, resolved), or of the
        whole project when None; raises :class:`LspError` when it cannot give them."""
        ...

    async def languages(self, root: Path) -> list[LanguageInfo]:
        """The languages of the project at ``root`` and their servers."""
        ...


class LspTools:
    """The tool functions of one ``lsp`` server, bound to its root and backend."""

    def __init__(self, rules: FsScope, backend: LspBackend) -> None:
        self.rules = rules
        self.backend = backend

    async def diagnostics(
        self,
        path: Annotated[
            str | None,
            Field(description="a file or directory relative to the project root; omit for the whole project"),
        ] = None,
    ) -> DiagnosticsReport:
        """Errors and warnings from the project's language servers (type checkers, linters) for a
        file, a directory, or the whole project. Files are read from disk first, so the result
        reflects every write so far. Lines and columns are 1-based; paths are root-relative."""
        target = None if path is None else self.rules.readable(path)
        try:
            return await self.backend.diagnostics(self.rules.root, target)
        except LspError as error:
            raise ToolError(str(error)) from error

    async def languages(self) -> LanguagesReport:
        """The languages detected in the project, and which language server serves each (or why
        none does, with how to install one)."""
        found = await self.backend.languages(self.rules.root)
        note = None if found else "no language with a known language server was detected in the project"
        return LanguagesReport(languages=found, note=note)


def plan_server(root: Path, manager: LspBackend) -> ServerPlan:
    """An ``lsp`` server for the project at ``root``, asking ``manager`` for everything."""
    tools = LspTools(FsScope(root, write=[]), manager)
    listed = ToolList()
    listed.add(tools.diagnostics, annotations=_READ)
    listed.add(tools.languages, annotations=_READ)
    return ServerPlan(
        "lsp",
        "Diagnostics from the project's language servers. Paths are relative to the project root.",
        listed,
    )


build_server = builds(plan_server)


async def _serve(root: Path, settings: object, timeout_s: float) -> None:
    manager_module = importlib.import_module("dispatch.hub.lsp.manager")  # standalone: it owns a manager
    async with manager_module.LspManager(settings, timeout_s=timeout_s) as manager:
        await build_server(root, manager).run_stdio_async()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m dispatch.servers.lsp --root DIR [--settings JSON]``: serve over stdio."""
    parser = argparse.ArgumentParser(prog="python -m dispatch.servers.lsp", description=__doc__)
    root_argument(parser)
    parser.add_argument("--settings", default="{}", help="the lsp config section as JSON, e.g. '{\"go\": false}'")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a server's answer")
    args = parser.parse_args(argv)
    root = existing_root(parser, args.root)
    try:
        settings = importlib.import_module("dispatch.hub.lsp.settings").LspSettings.model_validate_json(args.settings)
    except ValidationError as error:
        parser.error(f"--settings: {error}")
    logging.basicConfig(level=logging.WARNING)
    anyio.run(_serve, root, settings, args.timeout)


if __name__ == "__main__":
    from dispatch.servers.lsp import main as canonical_main  # not __main__'s copy: one LspError class

    canonical_main()
