"""``/api/events``: the WebSocket that streams every event of the hub as JSON, in order.

A client connects with ``?since=SEQ`` (the ``seq`` of the last event it saw; 0 for everything) and
first receives what it missed, replayed from the store, then every new event as it happens:
``HubService.follow_events(since)`` does both without gap or duplicate. Without ``since`` it
receives only the events that happen from then on. Each message is one event, ``{"seq", "at",
"type", "agent_id", "data"}``, the ephemeral ``model.delta`` and ``tool.output`` included (never
replayed: see :mod:`dispatch.hub.events`) unless ``?live=false``: a client that shows no streaming
text asks for the stored kinds only, and its listening makes no model call stream. The server sends
only; what the client sends is read and ignored, so a client may ping. When the hub shuts down the
socket closes with 1001.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from dispatch.hub.events import Event
from dispatch.hub.service.contract import HubService

GOING_AWAY = 1001


async def _until_closed(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    """Read (and drop) what the client sends; when it disconnects, cancel ``scope``."""
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
    finally:
        scope.cancel()


async def _send_all(websocket: WebSocket, events: AsyncIterator[Event]) -> bool:
    """Send the events; True when the hub's stream ended, False when the client left."""
    try:
        async for event in events:
            await websocket.send_text(event.wire)
    except WebSocketDisconnect:
        return False
    return True


async def stream_events(websocket: WebSocket, service: HubService, since: int | None, live: bool = True) -> None:
    """Accept the connection and send every event after ``since`` until the client leaves or the
    hub's stream ends (``live``: the ephemeral kinds too). The hub is followed before the handshake
    completes, so a client that has connected misses nothing that happens after (``since`` or not)."""
    ended = False
    async with service.follow_events(since, ephemeral=live) as events:
        await websocket.accept()
        async with anyio.create_task_group() as group:
            group.start_soon(_until_closed, websocket, group.cancel_scope)
            ended = await _send_all(websocket, events)
            group.cancel_scope.cancel()
    if ended and websocket.application_state is WebSocketState.CONNECTED:
        with contextlib.suppress(WebSocketDisconnect):
            await websocket.close(GOING_AWAY, "the hub is shutting down")


def events_router(service: HubService) -> APIRouter:
    router = APIRouter()

    @router.websocket("/api/events")
    async def events(  # pyright: ignore[reportUnusedFunction]
        websocket: WebSocket,
        since: Annotated[
            int | None, Query(ge=0, description="the seq of the last event seen (0: all); none: only new ones")
        ] = None,
        live: Annotated[
            bool,
            Query(description="the live-only kinds too (model.delta, tool.output); false: stored kinds only"),
        ] = True,
    ) -> None:
        await stream_events(websocket, service, since, live)

    return router
