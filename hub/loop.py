"""The event loop of a hub that serves (``dispatch serve``, ``dispatch demo``): the API's work
before the agents'.

asyncio runs the callbacks of a turn of its loop first in, first out. In a busy hub a turn is
every running agent's step, and a request waits out two or three of them: its bytes are read after
every callback queued in the turn before, and the task that serves it runs after every callback
queued in the turn that read them. :class:`ApiFirstLoop` runs a callback that serves the API
(one whose context has :data:`SERVES_API` set) ahead of every other queued callback, and behind the
API's own callbacks queued before it, so theirs keep their order.

What serves the API is marked where it starts: :func:`serving_api` around the start of the HTTP
server marks its listening socket, so every connection accepted, every read of it and every task
that serves a request or a WebSocket inherits the mark. Work that a request starts and that is not
the API's, an agent above all, is started inside :func:`not_serving_api`.

Only the loop's own thread jumps the queue; a callback scheduled from another thread joins the end
of the queue, as asyncio would have it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, cast

SERVES_API: contextvars.ContextVar[bool] = contextvars.ContextVar("dispatch_serves_api", default=False)
"""Set in the context of what serves the API: its callbacks run before the agents'."""


def serving_api() -> AbstractContextManager[None]:
    """Mark what starts inside: it serves the API (the HTTP server, started inside)."""
    return _marked(True)


def not_serving_api() -> AbstractContextManager[None]:
    """Start what is not the API's inside (an agent a request starts): it queues as usual."""
    return _marked(False)


@contextmanager
def _marked(serves: bool) -> Generator[None]:
    token = SERVES_API.set(serves)
    try:
        yield
    finally:
        SERVES_API.reset(token)


def _serves_api(handle: asyncio.Handle) -> bool:
    context = cast(contextvars.Context, handle._context)  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
    return context.get(SERVES_API, False)


class ApiFirstLoop(asyncio.SelectorEventLoop):
    """asyncio's loop, with the API's callbacks run ahead of the others (module docstring).

    It takes over two of the base loop's private methods, the ones every callback and every ready
    socket goes through (``_call_soon``, ``_add_callback``); ``tests/test_api_first_loop.py`` checks
    the order they give on the Python it runs on."""

    def _call_soon(
        self, callback: Callable[..., object], args: tuple[Any, ...], context: contextvars.Context | None
    ) -> asyncio.Handle:
        handle = cast(asyncio.Handle, super()._call_soon(callback, args, context))  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
        # the handle's context is this one, or the one given: read the mark there (cheaper than on the handle)
        if SERVES_API.get() if context is None else context.get(SERVES_API, False):
            self._move_ahead(handle)
        return handle

    def _add_callback(self, handle: asyncio.Handle) -> None:
        super()._add_callback(handle)  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
        if _serves_api(handle):
            self._move_ahead(handle)

    def _move_ahead(self, handle: asyncio.Handle) -> None:
        """``handle``, the API's, was just queued last: move it ahead of the others, behind the API's
        queued before it."""
        if threading.get_ident() != self._thread_id:  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
            return
        ready = cast(deque[asyncio.Handle], self._ready)  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
        last = len(ready) - 1
        if last < 0 or ready[last] is not handle:  # a cancelled handle is not queued
            return
        ahead = 0
        while ahead < last and _serves_api(ready[ahead]):
            ahead += 1
        if ahead < last:
            ready.pop()
            ready.insert(ahead, handle)
