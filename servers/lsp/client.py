"""One language-server process and the pygls 2.x client that speaks LSP to it.

Its room: start the process (credential-free environment, own process group, stderr tail kept),
``initialize``, keep documents in sync (``didOpen`` / ``didChange`` + ``didSave``, whole text)
and hand out the diagnostics of a given document *version*: pulled with
``textDocument/diagnostic`` when the server offers it (statically, or by registering it, as
pyright does once the client allows that), which is fresh for changes in other files too; else
the first ``publishDiagnostics`` for that version (from a server that sends no versions, the
first one after the change).
Shutdown always ends the process. Which documents to sync, and when, is the manager's job.

pygls 2.1 with lsprotocol 2025 cannot parse some servers' ``initialize`` replies (pylsp's
notebook selector; lsprotocol issue 462): :func:`lsp_converter` registers the missing hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import attrs
import cattrs
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.client import LanguageClient
from pygls.protocol import default_converter

from dispatch.servers.lsp.shapes import LspError
from dispatch.servers.sandbox.policy import scrub_environment

__all__ = ["LspClient", "ServerGone", "lsp_converter"]

STDERR_TAIL = 4000
_NOTHING_TO_DO = (  # requests a server may send that need no more than an empty answer
    types.WINDOW_WORK_DONE_PROGRESS_CREATE,
    types.CLIENT_UNREGISTER_CAPABILITY,
    types.WORKSPACE_DIAGNOSTIC_REFRESH,  # we pull afresh on every call anyway
    types.WORKSPACE_SEMANTIC_TOKENS_REFRESH,
    types.WORKSPACE_INLAY_HINT_REFRESH,
    types.WORKSPACE_CODE_LENS_REFRESH,
    types.WINDOW_SHOW_MESSAGE_REQUEST,  # no one to ask: no choice made
)
_QUIET = (
    "window/logMessage",
    "window/showMessage",
    "$/progress",
    "$/logTrace",
    "telemetry/event",
    "pyright/beginProgress",
    "pyright/reportProgress",
    "pyright/endProgress",
)


class ServerGone(Exception):
    """The language server process ended while a request waited for it."""


def lsp_converter() -> cattrs.Converter:
    """pygls' converter plus a structure hook for ``NotebookDocumentFilterWithCells.notebook``
    (``Optional[Union[str, NotebookDocumentFilter]]``), which lsprotocol 2025 lacks."""
    converter = default_converter()
    optional = attrs.fields(types.NotebookDocumentFilterWithCells).notebook.type
    plain = attrs.fields(types.NotebookCellTextDocumentFilter).notebook.type

    def structure(value: Any, _: Any) -> Any:
        return None if value is None else converter.structure(value, plain)

    converter.register_structure_hook(optional, structure)
    return converter


def _ignore(params: Any) -> None:
    """The answer to requests and notifications that need nothing from us (progress, logs)."""


def _plain(handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A fresh function calling ``handler``: pygls sets attributes on what it registers, which a
    bound method (or one function registered twice) does not allow."""

    def handle(params: Any) -> Any:
        return handler(params)

    return handle


def _section(settings: dict[str, Any], section: str | None) -> Any:
    """``settings`` at a dotted ``section`` (``"python.analysis"``), or None when absent."""
    value: Any = settings
    for part in (section or "").split(".") if section else []:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]  # pyright: ignore[reportUnknownVariableType]
    return value  # pyright: ignore[reportUnknownVariableType]


def _capabilities() -> types.ClientCapabilities:
    return types.ClientCapabilities(
        text_document=types.TextDocumentClientCapabilities(
            synchronization=types.TextDocumentSyncClientCapabilities(did_save=True),
            publish_diagnostics=types.PublishDiagnosticsClientCapabilities(version_support=True),
            diagnostic=types.DiagnosticClientCapabilities(dynamic_registration=True),
        ),
        workspace=types.WorkspaceClientCapabilities(configuration=True, workspace_folders=True),
    )


class LspClient(LanguageClient):
    """A pygls client bound to one server process for one project root."""

    def __init__(self, root: Path, settings: dict[str, Any] | None = None) -> None:
        super().__init__("dispatch", "0.1", converter_factory=lsp_converter)
        self.root = root
        self.settings = settings or {}
        self.pull = False
        self.stderr_tail = ""
        self._results: dict[str, tuple[int, list[types.Diagnostic]]] = {}
        self._latest: dict[str, int] = {}
        self._changed = anyio.Event()
        self._stderr_task: asyncio.Task[None] | None = None
        handlers: dict[str, Callable[[Any], Any]] = {
            types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS: self._on_publish,
            types.WORKSPACE_CONFIGURATION: self._on_configuration,
            types.CLIENT_REGISTER_CAPABILITY: self._on_register,
            types.WORKSPACE_WORKSPACE_FOLDERS: lambda _: [self._folder()],
        }
        for method in (*_NOTHING_TO_DO, *_QUIET):
            handlers[method] = _ignore
        for method, handler in handlers.items():
            self.feature(method)(_plain(handler))

    # ---- the process -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return None if self._server is None else self._server.pid

    @property
    def returncode(self) -> int | None:
        return None if self._server is None else self._server.returncode

    @property
    def alive(self) -> bool:
        return self._server is not None and self._server.returncode is None and not self.stopped

    def _folder(self) -> types.WorkspaceFolder:
        return types.WorkspaceFolder(uri=self.root.as_uri(), name=self.root.name)

    async def launch(self, command: tuple[str, ...], init_options: dict[str, Any]) -> types.InitializeResult:
        """Start the process in the root and run the ``initialize`` handshake."""
        env = scrub_environment(os.environ)
        await self.start_io(command[0], *command[1:], cwd=str(self.root), env=env, start_new_session=True)
        assert self._server is not None and self._server.stderr is not None
        self._stderr_task = asyncio.create_task(self._keep_stderr(self._server.stderr))
        params = types.InitializeParams(
            capabilities=_capabilities(),
            process_id=os.getpid(),
            root_uri=self.root.as_uri(),
            root_path=str(self.root),
            workspace_folders=[self._folder()],
            initialization_options=init_options or None,
            client_info=types.ClientInfo(name="dispatch"),
        )
        result = await self._request(self.initialize_async(params))
        self.pull = result.capabilities.diagnostic_provider is not None
        self.initialized(types.InitializedParams())
        if self.settings:
            self.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=self.settings))
        return result

    async def _keep_stderr(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            self.stderr_tail = (self.stderr_tail + chunk.decode("utf-8", "replace"))[-STDERR_TAIL:]

    async def server_exit(self, server: asyncio.subprocess.Process) -> None:
        self._wake()

    async def close(self, grace_s: float = 2.0) -> None:
        """Ask the server to shut down; kill its process group if it does not within ``grace_s``."""
        server = self._server
        with anyio.CancelScope(shield=True):
            if server is not None and self.alive:
                with anyio.move_on_after(grace_s), contextlib.suppress(Exception):
                    await self.shutdown_async(None)
                    self.exit(None)
                    await server.wait()
            if server is not None:  # the whole group: helpers it started die with it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(server.pid, signal.SIGKILL)
                await server.wait()
            with anyio.move_on_after(grace_s):
                await self.stop()
            if self._stderr_task is not None:
                self._stderr_task.cancel()

    # ---- documents and diagnostics -----------------------------------------------------------

    def open(self, uri: str, language_id: str, text: str, version: int) -> None:
        self._latest[uri] = version
        item = types.TextDocumentItem(uri=uri, language_id=language_id, version=version, text=text)
        self.text_document_did_open(types.DidOpenTextDocumentParams(text_document=item))

    def change(self, uri: str, text: str, version: int) -> None:
        """Replace the whole text of an open document, then say it was saved."""
        self._latest[uri] = version
        document = types.VersionedTextDocumentIdentifier(uri=uri, version=version)
        change = types.TextDocumentContentChangeWholeDocument(text=text)
        self.text_document_did_change(types.DidChangeTextDocumentParams(document, [change]))
        self.text_document_did_save(types.DidSaveTextDocumentParams(types.TextDocumentIdentifier(uri), text))

    def close_document(self, uri: str) -> None:
        self._latest.pop(uri, None)
        self._results.pop(uri, None)
        self.text_document_did_close(types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri)))

    async def diagnostics(self, uri: str, version: int) -> list[types.Diagnostic]:
        """The diagnostics of ``uri`` at ``version`` or later; never older ones. Pulled, they are
        also fresh for changes in other files; pushed, they are the server's latest for the text."""
        while True:
            changed = self._changed
            if self.pull:  # checked each time round: a server may register pull after we wait
                return await self._pull(uri)
            found = self._results.get(uri)
            if found is not None and found[0] >= version:
                return found[1]
            if not self.alive:
                raise await self._gone()
            await changed.wait()

    async def _pull(self, uri: str) -> list[types.Diagnostic]:
        params = types.DocumentDiagnosticParams(text_document=types.TextDocumentIdentifier(uri))
        report = await self._request(self.text_document_diagnostic_async(params))
        full = types.RelatedFullDocumentDiagnosticReport | types.FullDocumentDiagnosticReport
        return list(report.items) if isinstance(report, full) else []

    async def _request(self, pending: Any) -> Any:
        try:
            return await pending
        except RuntimeError as error:  # pygls fails pending requests this way when the process ends
            raise await self._gone() from error
        except JsonRpcException as error:
            raise LspError(f"the language server answered with an error: {error}") from error

    async def _gone(self) -> ServerGone:
        """The error for a server that exited, with the last lines it wrote to stderr."""
        if self._stderr_task is not None:
            await asyncio.wait([self._stderr_task], timeout=1.0)  # what it said just before it ended
        tail = self.stderr_tail.strip().splitlines()[-5:]
        said = ("; its last output: " + " | ".join(tail)) if tail else ""
        return ServerGone(f"the language server exited (code {self.returncode}){said}")

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # ---- what the server sends ---------------------------------------------------------------

    def _on_publish(self, params: types.PublishDiagnosticsParams) -> None:
        latest = self._latest.get(params.uri)
        if latest is None:
            return  # a document we have not opened (or closed since)
        version = latest if params.version is None else params.version  # no version: the newest text
        if version < self._results.get(params.uri, (-1, []))[0]:
            return
        self._results[params.uri] = (version, list(params.diagnostics))
        self._wake()

    def _on_configuration(self, params: types.ConfigurationParams) -> list[Any]:
        return [_section(self.settings, item.section) for item in params.items]

    def _on_register(self, params: types.RegistrationParams) -> None:
        if any(r.method == types.TEXT_DOCUMENT_DIAGNOSTIC for r in params.registrations):
            self.pull = True  # pyright, told it may register pull diagnostics, stops pushing
            self._wake()
