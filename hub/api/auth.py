"""Who may talk to the hub: a token made on first start, Host/Origin checks against DNS rebinding,
and a cap on request bodies.

The token lives in the data directory (mode 0600). Every HTTP and WebSocket request needs it, as
``Authorization: Bearer TOKEN`` or ``?token=TOKEN``, except the paths left open (health). The
``Host`` header must name an allowed host (loopback by default) and a browser's ``Origin``, when
sent, must be one of the hub's own origins: ``http``, an allowed host, and the port the hub
serves on (another local port is another site). A request body over :data:`MAX_BODY_BYTES` is
refused with 413 before any of it reaches the API. Implemented as a pure ASGI middleware, so it
guards the REST API, the WebSocket and the mounted MCP endpoint alike. A refused WebSocket
handshake gets the same HTTP answer (401 or 403, JSON) where the server supports denial responses
(uvicorn does), else a close with code 4000 + status (4401, 4403).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_FILE = "token"
MAX_BODY_BYTES = 1 << 20
"""The largest request body the API takes (1 MiB): a message, a task, a chat message, an MCP call."""


SIGN_IN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Dispatch: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}
code{background:#f2f2f2;padding:.1rem .3rem;border-radius:3px}</style></head>
<body><h1>This Dispatch hub needs its token</h1>
<p>Open the address that <code>dispatch serve</code> printed: it ends in <code>?token=...</code>.</p>
<p>Lost it? Run <code>dispatch serve</code> again in a terminal: while the hub runs, it prints the
running hub's address with its token. The token is also kept in the file <code>token</code> of
Dispatch's data directory (<code>$DISPATCH_HOME</code>, by default <code>~/.local/share/dispatch</code>).</p>
</body></html>
"""
"""What a browser gets at the UI's address without the token (status 401)."""


def load_or_create_token(data_dir: Path) -> str:
    """The hub's token, made (0600) on first use."""
    path = data_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def _host_of(value: str) -> str:
    """The host part of a ``Host`` header or an origin's netloc, without port or brackets."""
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _port_of(value: str, default: int) -> int | None:
    """The port of a ``Host`` header or an origin's netloc (``default`` when none is written)."""
    tail = value[value.find("]") + 1 :] if value.startswith("[") else value
    if tail.count(":") != 1:
        return default
    written = tail.rsplit(":", 1)[1]
    return int(written) if written.isdigit() else None


class _TooLarge(Exception):
    pass


class HubGuard:
    """ASGI middleware: token, Host and Origin checks before anything else runs."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
        open_paths: Iterable[str] = ("/api/health",),
    ) -> None:
        self._app = app
        self._token = token.encode()
        self._hosts = {h.lower() for h in allowed_hosts}
        self._open = set(open_paths)

    def _headers(self, scope: Scope) -> dict[str, str]:
        return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}

    def _problem(self, scope: Scope) -> tuple[int, str] | None:
        headers = self._headers(scope)
        host = _host_of(headers.get("host", "")).lower()
        if host not in self._hosts:
            return 403, f"host {headers.get('host', '')!r} is not allowed (DNS rebinding guard)"
        origin = headers.get("origin")
        if origin == "null" or (origin is not None and not self._own_origin(scope, headers, origin)):
            return 403, f"origin {origin!r} is not allowed (not the hub's own page)"
        if scope.get("path") in self._open:
            return None
        offered = ""
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            offered = authorization[7:].strip()
        else:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            offered = (query.get("token") or [""])[0]
        if not offered or not hmac.compare_digest(offered.encode(), self._token):
            return 401, "a valid token is required (Authorization: Bearer TOKEN or ?token=TOKEN)"
        return None

    def _own_origin(self, scope: Scope, headers: dict[str, str], origin: str) -> bool:
        """Whether ``origin`` is one of the hub's: http, an allowed host, the port it serves on."""
        parts = urlsplit(origin)
        if parts.scheme != "http" or _host_of(parts.netloc).lower() not in self._hosts:
            return False
        server = scope.get("server")
        served = server[1] if server and server[1] else _port_of(headers.get("host", ""), 80)
        return _port_of(parts.netloc, 80) == served

    def _wants_page(self, scope: Scope) -> bool:
        """A browser opening the UI without the token (not an API client): it gets a page saying how
        to get in instead of JSON."""
        accept = self._headers(scope).get("accept", "")
        return scope.get("method") == "GET" and scope.get("path") in ("/", "/index.html") and "text/html" in accept

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        problem = self._problem(scope)
        if problem is None and scope["type"] == "http":
            problem = self._body_problem(scope)
        if problem is None and scope["type"] == "http":
            try:
                body = await self._read_body(receive)
            except _TooLarge:
                problem = self._too_large()
            else:
                await self._app(scope, self._replay(body, receive), send)
                return
        if problem is None:
            await self._app(scope, receive, send)
            return
        status, detail = problem
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401 and scope["type"] == "http" and self._wants_page(scope):
            body = SIGN_IN_PAGE.encode()
            headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        if scope["type"] == "websocket":
            if "websocket.http.response" not in scope.get("extensions", {}):
                await send({"type": "websocket.close", "code": 4000 + status, "reason": detail})
                return
            await receive()  # websocket.connect: then refuse the handshake with an HTTP answer
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _too_large() -> tuple[int, str]:
        return 413, f"the request body is larger than the API takes ({MAX_BODY_BYTES // 1024} KiB)"

    def _body_problem(self, scope: Scope) -> tuple[int, str] | None:
        length = self._headers(scope).get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return self._too_large()
        return None

    @staticmethod
    async def _read_body(receive: Receive) -> list[Message]:
        """The request's body messages, read ahead (a body sent in chunks, with no length, is
        counted as it comes); _TooLarge once past :data:`MAX_BODY_BYTES`."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > MAX_BODY_BYTES:
                raise _TooLarge
            if not message.get("more_body", False):
                return messages

    @staticmethod
    def _replay(messages: list[Message], receive: Receive) -> Receive:
        queued = list(messages)

        async def replay() -> Message:
            return queued.pop(0) if queued else await receive()

        return replay
