"""LSP diagnostics for agents: language detection, one shared language server per project and
language, and the config overrides. The MCP face is :mod:`dispatch.servers.lsp`.

    settings.py   LspSettings, LanguageOverride: the config's ``lsp`` section (no pygls import)
    languages.py  known languages, detection, which server to run (ServerPlan)
    client.py     one server process and the pygls client that talks to it
    documents.py  files as LSP documents; LSP diagnostics in the tool's shape
    manager.py    LspManager: the processes, their restarts, fresh diagnostics

Import from the modules; this package imports nothing, so reading config stays light.
"""
