"""The ``lsp`` tool server's tools: ``diagnostics`` and ``languages`` of one project root.

The language servers themselves are owned by a backend it is given (:class:`LspBackend`; the hub's
:class:`~dispatch.servers.lsp.manager.LspManager` shares one server process per project and
language among all agents), so this module knows nothing of processes or of the hub. Paths go
through the ``fs`` server's :class:`~dispatch.servers.fs.scope.FsScope`: outside the root is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from mcp_types import ToolAnnotations
from pydantic import Field

from .._base import ServerPlan, ToolError, ToolList, builds
from ..fs.scope import FsScope
from .shapes import DiagnosticsReport, LanguagesReport, LspBackend, LspError

_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)


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
