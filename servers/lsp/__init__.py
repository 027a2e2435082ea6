"""The ``lsp`` tool server: diagnostics from the project's language servers, and what serves which
language, with the machinery that runs those servers.

    shapes.py     Diagnostic, DiagnosticsReport, LanguageInfo, LspBackend, LspError: what crosses
                  between the tools and the backend (pydantic only)
    server.py     the MCP face: plan_server / build_server for one project root and a backend
    settings.py   LspSettings, LanguageOverride: the config's ``lsp`` section (no pygls import)
    languages.py  known languages, detection, which server to run (LaunchPlan)
    client.py     one server process and the pygls client that talks to it
    documents.py  files as LSP documents; LSP diagnostics in the tool's shape
    manager.py    LspManager: the processes, their restarts, fresh diagnostics
    __main__.py   ``python -m dispatch.servers.lsp --root DIR``: the tools over stdio with a manager of their own

The hub builds one server per agent with ``server.build_server`` over its shared manager. This
package offers the shapes; the face (the MCP SDK) and the manager (pygls) load only when imported.
"""

from .shapes import Diagnostic, DiagnosticsReport, LanguageInfo, LanguagesReport, LspBackend, LspError, Severity

__all__ = [
    "Diagnostic",
    "DiagnosticsReport",
    "LanguageInfo",
    "LanguagesReport",
    "LspBackend",
    "LspError",
    "Severity",
]
