"""The shapes that cross between the ``lsp`` tool server and whoever runs the language servers:
diagnostics, languages, the backend protocol and its one error. A leaf: pydantic only."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["error", "warning", "information", "hint"]


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
