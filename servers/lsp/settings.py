"""LSP overrides from the config file: ``lsp: {python: {command: [...], ...}, go: false}``.

Its room: the shape of the ``lsp`` section and nothing else. The config loader validates the
section into :class:`LspSettings` and hands it to :class:`dispatch.servers.lsp.manager.LspManager`;
what an override means (it wins over detection; ``false`` turns a language off) is applied in
:mod:`dispatch.servers.lsp.languages`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LanguageOverride", "LspSettings"]


class LanguageOverride(BaseModel):
    """How to run the language server of one language, instead of (or on top of) detection."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    command: list[str] | None = Field(default=None, min_length=1)
    """The server's argv, e.g. ``["pylsp"]`` or ``["node", "/opt/x/server.js", "--stdio"]``; the
    program is looked up on PATH. Unset: the detected server. Set: the language is served even
    when detection did not find it in the project."""
    init_options: dict[str, Any] = Field(default_factory=dict[str, Any])
    """Sent as ``initializationOptions`` in the LSP ``initialize`` request."""
    settings: dict[str, Any] = Field(default_factory=dict[str, Any])
    """Workspace settings, e.g. ``{"python": {"analysis": {"typeCheckingMode": "strict"}}}``:
    answered to ``workspace/configuration`` by section and sent in
    ``workspace/didChangeConfiguration``."""


LanguageSetting = LanguageOverride | bool


class LspSettings(BaseModel):
    """The ``lsp`` config section: one entry per language; ``true`` (the default) detects and
    starts the usual server, ``false`` turns the language off, a mapping overrides how it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    python: LanguageSetting = True
    """Python (pyright-langserver, basedpyright-langserver or pylsp when detected)."""
    typescript: LanguageSetting = True
    """TypeScript and JavaScript (typescript-language-server)."""
    go: LanguageSetting = True
    """Go (gopls)."""
    rust: LanguageSetting = True
    """Rust (rust-analyzer)."""

    def for_language(self, language: str) -> LanguageSetting:
        """The setting of one language by its key (``"python"``, ``"go"``, ...)."""
        value: LanguageSetting = getattr(self, language)
        return value
