"""The hub's HTTP + WebSocket API: a FastAPI app over a :class:`~dispatch.hub.service.contract.HubService`.

``create_app(service, token=...)`` builds it. Every request passes :class:`~dispatch.hub.api.auth.HubGuard`
first (token, Host, Origin, body size); only ``GET /api/health`` needs no token (the schema,
``/openapi.json``, and its page, ``/docs``, need it too). The routes live in small modules, one
per resource; each returns the service's view models:

    /api/agents ...      hub/api/routes/agents.py    the tree, transcripts, messages, model, cancel, resume
    /api/chats ...       hub/api/routes/chats.py     chats, their messages, fork, search
    /api/threads ...     hub/api/routes/threads.py   detached agents' questions; the user answers them
    /api/approvals ...   hub/api/routes/hub.py      approvals, artifacts, usage, health
    /api/events          hub/api/events.py           the WebSocket of events, replayed from ``since``
    /mcp                 the hub's MCP tools over streamable HTTP (when given by ``dispatch serve``)
    /                    the web UI (``web/index.html`` when present), mounted last

Every mistake of the caller is a 4xx with ``{"detail": "what is wrong"}``: a malformed body or
query (422), a ``UserError`` from the service (400), an unknown id (``NotFoundError``, 404), a
conflict (``ConflictError``, 409). A write while the data directory is full answers 507, its detail
naming the directory (``StoreFull``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute

from dispatch.hub.api.auth import LOOPBACK_HOSTS, HubGuard
from dispatch.hub.api.common import ERRORS
from dispatch.hub.api.events import events_router
from dispatch.hub.api.routes.agents import agents_router
from dispatch.hub.api.routes.chats import chats_router
from dispatch.hub.api.routes.hub import misc_router
from dispatch.hub.api.routes.threads import threads_router
from dispatch.hub.errors import ConflictError, NotFoundError, StoreFull, UserError
from dispatch.hub.service.contract import HubService

log = logging.getLogger(__name__)

OPEN_PATHS = ("/api/health",)
"""What needs no token: the health check (nothing of the hub's state)."""

_FALLBACK_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Dispatch</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>Dispatch hub</h1>
<p>The API is up. The web UI is not installed in this build.</p>
<p>See /docs (with the token) for the REST API; events stream on the WebSocket
<code>/api/events?since=SEQ</code>. Every call needs the token, as
<code>Authorization: Bearer TOKEN</code> or <code>?token=TOKEN</code>.</p>
</body></html>
"""


def _describe(error: dict[str, Any]) -> str:
    """One validation error as ``where: what`` (``body.kind: Input should be ...``)."""
    if error.get("type") == "json_invalid":
        return f"body: not valid JSON ({error.get('ctx', {}).get('error', 'cannot be parsed')})"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {message}" if where else message


async def _invalid(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    errors: Sequence[dict[str, Any]] = error.errors()
    detail = "; ".join(_describe(e) for e in errors) or "the request is not valid"
    return JSONResponse({"detail": detail, "errors": _plain(errors)}, status_code=422)


def _plain(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The validation errors, JSON-safe (pydantic puts the offending exception in ``ctx``)."""
    return [{"loc": list(e.get("loc", ())), "msg": _describe(e), "type": str(e.get("type", ""))} for e in errors]


async def _user_error(_: Request, error: Exception) -> JSONResponse:
    status = 404 if isinstance(error, NotFoundError) else 409 if isinstance(error, ConflictError) else 400
    return JSONResponse({"detail": str(error)}, status_code=status)


async def _store_full(_: Request, error: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=507)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    """A bug, not the caller's mistake: logged with its traceback (the hub's log), answered in JSON."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=error)
    detail = f"the hub failed on this request ({type(error).__name__}); its log (hub.log) has the details"
    return JSONResponse({"detail": detail}, status_code=500)


def _web_dir() -> Path | None:
    """The installed web UI, if it has a page to serve."""
    try:
        web = Path(str(files("dispatch.web")))
    except (ModuleNotFoundError, NotADirectoryError):
        return None
    return web if (web / "index.html").is_file() else None


def _mount_ui(app: FastAPI) -> None:
    """The UI at ``/``, after every API route (a mount at ``/`` would shadow what follows it)."""
    web = _web_dir()
    if web is not None:
        app.mount("/", StaticFiles(directory=web, html=True), name="ui")
        return

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def fallback_page() -> str:  # pyright: ignore[reportUnusedFunction]
        return _FALLBACK_PAGE


def _mount_docs(app: FastAPI, token: str) -> None:
    """``/docs``: the schema's page, which fetches ``/openapi.json`` with the token it was opened
    with (the guard let only a holder of the token reach it)."""

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:  # pyright: ignore[reportUnusedFunction]
        page = get_swagger_ui_html(openapi_url=f"/openapi.json?token={token}", title="Dispatch hub: API")
        page.headers["Cache-Control"] = "no-store"
        return page


def create_app(
    service: HubService,
    *,
    token: str,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    extra_routes: Sequence[BaseRoute] = (),
) -> FastAPI:
    """The API over ``service``, guarded by ``token`` and the ``allowed_hosts`` (loopback by default).
    ``extra_routes`` (e.g. the MCP endpoint at ``/mcp``) go behind the same guard, before the UI."""
    app = FastAPI(
        title="Dispatch hub",
        version="1",
        description="Agents, chats, approvals, artifacts and usage of one Dispatch hub. Every call but "
        "/api/health needs the token: `Authorization: Bearer TOKEN` or `?token=TOKEN`. A request body "
        "may be 1 MiB at most (413 above).",
        docs_url=None,
        redoc_url=None,
    )
    _mount_docs(app, token)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(UserError, _user_error)
    app.add_exception_handler(StoreFull, _store_full)
    app.add_exception_handler(Exception, _unexpected)
    for router in (agents_router(service), chats_router(service), threads_router(service), misc_router(service)):
        app.include_router(router, responses=ERRORS)
    app.include_router(events_router(service))
    app.router.routes.extend(extra_routes)
    _mount_ui(app)
    app.add_middleware(HubGuard, token=token, allowed_hosts=tuple(allowed_hosts), open_paths=OPEN_PATHS)
    return app


__all__ = ["OPEN_PATHS", "create_app"]
