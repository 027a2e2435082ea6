"""Files on disk as LSP documents, and LSP diagnostics as the ``lsp`` tool reports them.

Its room: reading the files a diagnostics request covers (text, capped size), and turning an
``lsprotocol`` diagnostic into a :class:`~dispatch.servers.lsp.Diagnostic` with 1-based line and
column, counting the column in characters rather than the UTF-16 units LSP counts in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lsprotocol import types

from dispatch.servers.lsp.shapes import Diagnostic, Severity

__all__ = ["MAX_FILE_BYTES", "Document", "read_text", "to_diagnostic"]

MAX_FILE_BYTES = 2 * 1024 * 1024
"""Larger files are not sent to a language server."""
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SEVERITY: dict[types.DiagnosticSeverity, Severity] = {
    types.DiagnosticSeverity.Error: "error",
    types.DiagnosticSeverity.Warning: "warning",
    types.DiagnosticSeverity.Information: "information",
    types.DiagnosticSeverity.Hint: "hint",
}


@dataclass
class Document:
    """A file as the language server last saw it."""

    uri: str
    text: str
    version: int


def read_text(path: Path) -> str | None:
    """The file's text (UTF-8, undecodable bytes replaced), or None when it is gone, not a file,
    or larger than :data:`MAX_FILE_BYTES`."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            return None
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None


def _column(line_text: str, utf16_units: int) -> int:
    """The 1-based character column of a position given in UTF-16 code units."""
    head = line_text.encode("utf-16-le")[: 2 * utf16_units]
    return len(head.decode("utf-16-le", errors="ignore")) + 1


def to_diagnostic(relative: str, text: str, found: types.Diagnostic) -> Diagnostic:
    """An LSP diagnostic of the file ``relative`` (whose text is ``text``) in the tool's shape."""
    start = found.range.start
    lines = _LINE_BREAK.split(text)
    line_text = lines[start.line] if start.line < len(lines) else ""
    return Diagnostic(
        file=relative,
        line=start.line + 1,
        column=_column(line_text, start.character),
        severity=_SEVERITY.get(found.severity, "error") if found.severity is not None else "error",
        source=found.source,
        code=None if found.code is None else str(found.code),
        message=found.message,
    )
