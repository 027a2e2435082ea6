"""The LSP manager: one long-lived language-server process per (project root, language), shared
by every agent of that project, restarted when it dies, shut down with the hub.

Its room: the servers' lifecycles and the freshness of what they report. Each ``diagnostics``
call reads the files it covers (and every file the server already has open) from disk, sends
``didOpen`` the first time or ``didChange`` + ``didSave`` with a new version when the text
changed, and waits for the diagnostics of *that* version, so writes through ``fs`` and through
``shell`` are both seen and nothing stale comes back. Every call has one deadline; missing
servers and servers that do not answer in time come back as :class:`LspError` with a message
that says what to do. The manager is the ``LspBackend`` of :mod:`dispatch.servers.lsp`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import anyio
import anyio.to_thread
from lsprotocol import types

from dispatch.servers.lsp.client import LspClient, ServerGone
from dispatch.servers.lsp.documents import Document, read_text, to_diagnostic
from dispatch.servers.lsp.languages import Language, LaunchPlan, language_of, plan_language, plan_servers, walk_sources
from dispatch.servers.lsp.settings import LspSettings
from dispatch.servers.lsp.shapes import Diagnostic, DiagnosticsReport, LanguageInfo, LspError

__all__ = ["LspManager"]

_Found = tuple[str, list[types.Diagnostic]]
"""A file's text as sent, and the server's diagnostics for it."""

log = logging.getLogger(__name__)

MAX_FILES = 500
"""Files one directory or workspace request covers at most."""
MAX_DIAGNOSTICS = 300
"""Diagnostics one answer carries at most."""


@dataclass
class _Server:
    """One (root, language) slot: its process when running, and the documents it has open."""

    root: Path
    language: Language
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    client: LspClient | None = None
    plan: LaunchPlan | None = None
    documents: dict[Path, Document] = field(default_factory=dict[Path, Document])
    restarted: str | None = None


class LspManager:
    """Owns the language servers of every project it is asked about; use it as ``async with``.
    Roots and targets given to it are absolute and resolved (as ``PathRules`` gives them)."""

    def __init__(
        self,
        settings: LspSettings | None = None,
        *,
        timeout_s: float = 30.0,
        search_path: str | None = None,
        max_files: int = MAX_FILES,
    ) -> None:
        """``settings``: the config's ``lsp`` section. ``timeout_s``: the deadline of one call,
        server start included. ``search_path``: where to look for servers (default PATH plus
        this Python's folder)."""
        self.settings = settings or LspSettings()
        self.timeout_s = timeout_s
        self.search_path = search_path
        self.max_files = max_files
        self._servers: dict[tuple[Path, str], _Server] = {}
        self._open = False

    async def __aenter__(self) -> Self:
        self._open = True
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Shut every server down (each is killed if it does not exit within a grace period)."""
        self._open = False
        servers, self._servers = list(self._servers.values()), {}
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as group:
                for server in servers:
                    if server.client is not None:
                        group.start_soon(server.client.close)

    def pid(self, root: Path, language: str) -> int | None:
        """The process id of the running server of ``language`` for ``root``, if any."""
        server = self._servers.get((root.resolve(), language))
        client = None if server is None else server.client
        return client.pid if client is not None and client.alive else None

    # ---- the backend of the lsp tool server --------------------------------------------------

    async def languages(self, root: Path) -> list[LanguageInfo]:
        plans = await anyio.to_thread.run_sync(plan_servers, root, self.settings, self.search_path)
        infos: list[LanguageInfo] = []
        for plan in plans:
            pid = self.pid(root, plan.language.key)
            if plan.problem is not None:
                status = f"unavailable: {plan.problem}"
            else:
                status = f"running (pid {pid})" if pid is not None else "starts on first use"
            infos.append(
                LanguageInfo(
                    language=plan.language.key,
                    detected_by=plan.detected_by,
                    server=plan.server,
                    command=None if plan.command is None else list(plan.command),
                    configured=plan.from_config,
                    status=status,
                )
            )
        return infos

    async def diagnostics(self, root: Path, target: Path | None) -> DiagnosticsReport:
        if not self._open:
            raise RuntimeError("the LSP manager is not running; use 'async with LspManager(...)'")
        target = root if target is None else target
        report = DiagnosticsReport()
        if target.is_file():
            match = language_of(target)
            if match is None:
                raise LspError(f"no language server handles {target.suffix or 'extensionless'} files")
            await self._check(root, match[0], [target], report, strict=True)
        elif target.is_dir():
            files = await anyio.to_thread.run_sync(self._sources, root, target)
            groups: dict[Language, list[Path]] = {}
            for file in files:
                match = language_of(file)
                if match is not None:
                    groups.setdefault(match[0], []).append(file)
            if len(files) >= self.max_files:
                report.notes.append(f"only the first {self.max_files} source files were checked")
            if not groups:
                raise LspError(f"no source files of a known language under {_relative(root, target)!r}")
            async with anyio.create_task_group() as group:
                for language, paths in groups.items():
                    group.start_soon(self._check, root, language, paths, report, False, name=language.key)
            if report.files_checked == 0:
                raise LspError("; ".join(report.notes))
        else:
            raise LspError(f"{_relative(root, target)!r}: not found")
        return _finish(report)

    def _sources(self, root: Path, top: Path) -> list[Path]:
        files: list[Path] = []
        for path in walk_sources(top, root, limit=50 * self.max_files):
            files.append(path)
            if len(files) >= self.max_files:
                break
        return files

    # ---- one language's share of a request ---------------------------------------------------

    async def _check(
        self, root: Path, language: Language, files: list[Path], report: DiagnosticsReport, strict: bool
    ) -> None:
        """Add the diagnostics of ``files`` (all of ``language``) to ``report``. A failure raises
        when ``strict``, else becomes a note (other languages of a workspace still report)."""
        server = self._servers.setdefault((root, language.key), _Server(root, language))
        try:
            found = await self._fresh_diagnostics(server, files)
        except LspError as error:
            if strict:
                raise
            report.notes.append(f"{language.key}: {error}")
            return
        if server.restarted is not None:
            report.notes.append(server.restarted)
            server.restarted = None
        for path, (text, items) in found.items():
            report.files_checked += 1
            report.diagnostics.extend(to_diagnostic(_relative(root, path), text, d) for d in items)

    async def _fresh_diagnostics(self, server: _Server, files: list[Path]) -> dict[Path, _Found]:
        """The diagnostics of each file as its text is on disk now; one retry after a crash."""
        for attempt in (1, 2):
            doing = "starting"
            try:
                with anyio.fail_after(self.timeout_s):
                    client, wanted = await self._sync(server, files)
                    found: dict[Path, _Found] = {}
                    for path, document in wanted.items():
                        doing = f"checking {_relative(server.root, path)!r}"
                        found[path] = (document.text, await client.diagnostics(document.uri, document.version))
                    return found
            except ServerGone as gone:
                if attempt == 2:
                    raise LspError(f"{_name(server)}: {gone}") from gone
            except TimeoutError:
                if doing == "starting":  # a half-started server is of no use: stop it
                    await self._drop(server)
                raise LspError(
                    f"{_name(server)} gave no answer within {self.timeout_s:g} s ({doing}); try again, or "
                    "check it with 'dispatch doctor'"
                ) from None
        raise AssertionError("unreachable")

    async def _sync(self, server: _Server, files: list[Path]) -> tuple[LspClient, dict[Path, Document]]:
        """Under the server's lock: start it if needed, then bring every open document and every
        file asked for up to date with the disk. Returns the documents of ``files``."""
        async with server.lock:
            client = await self._running(server)
            paths = list(dict.fromkeys([*server.documents, *files]))
            texts = await anyio.to_thread.run_sync(lambda: [read_text(p) for p in paths])
            wanted: dict[Path, Document] = {}
            for path, text in zip(paths, texts, strict=True):
                document = server.documents.get(path)
                if text is None:
                    if document is not None:
                        client.close_document(document.uri)
                        del server.documents[path]
                    continue
                if document is None:
                    match = language_of(path)
                    document = server.documents[path] = Document(path.as_uri(), text, 1)
                    client.open(document.uri, match[1] if match else server.language.key, text, 1)
                elif document.text != text:
                    document.text, document.version = text, document.version + 1
                    client.change(document.uri, text, document.version)
                if path in files:
                    wanted[path] = Document(document.uri, document.text, document.version)
            missing = [f for f in files if f not in wanted]
            if missing and len(files) == 1:
                raise LspError(f"{_relative(server.root, missing[0])!r} is gone, unreadable or over 2 MiB")
            return client, wanted

    async def _running(self, server: _Server) -> LspClient:
        """The server's client, started (or restarted) when it is not running."""
        if server.client is not None and server.client.alive:
            return server.client
        if server.client is not None:
            code = server.client.returncode
            server.restarted = f"the {server.language.key} language server had exited (code {code}); it was restarted"
            await self._drop(server)
        plan = await anyio.to_thread.run_sync(plan_language, server.language, self.settings, self.search_path, None)
        if plan.problem is not None or plan.command is None:
            raise LspError(plan.problem or f"no {server.language.key} language server")
        client = LspClient(server.root, plan.settings)
        server.plan = plan
        try:
            await client.launch(plan.command, plan.init_options)
        except OSError as error:
            await client.close(grace_s=0.5)
            raise LspError(f"cannot start {plan.server} ({' '.join(plan.command)}): {error}") from error
        except BaseException:
            await client.close(grace_s=0.5)
            raise
        log.info("started %s for %s (pid %s)", plan.server, server.root, client.pid)
        server.client = client
        return client

    async def _drop(self, server: _Server) -> None:
        """Stop the server's process (if any) and forget what it had open."""
        client, server.client = server.client, None
        server.documents.clear()
        if client is not None:
            await client.close(grace_s=0.5)


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _name(server: _Server) -> str:
    program = server.plan.server if server.plan is not None else None
    return f"the {server.language.key} language server" + (f" ({program})" if program else "")


def _finish(report: DiagnosticsReport) -> DiagnosticsReport:
    """Sorted by file and position; at most MAX_DIAGNOSTICS, errors first when cut."""
    found: list[Diagnostic] = sorted(report.diagnostics, key=lambda d: (d.file, d.line, d.column))
    if len(found) > MAX_DIAGNOSTICS:
        rank = {"error": 0, "warning": 1, "information": 2, "hint": 3}
        kept = sorted(found, key=lambda d: rank[d.severity])[:MAX_DIAGNOSTICS]
        report.notes.append(f"{len(found) - MAX_DIAGNOSTICS} more diagnostics not shown; ask for a narrower path")
        found = sorted(kept, key=lambda d: (d.file, d.line, d.column))
    report.diagnostics = found
    return report
