"""The event loop of a hub that serves (``dispatch serve``, ``dispatch demo``): the API's work
before the agents'.

asyncio runs the callbacks of a turn of its loop first in, first out. In a busy hub a turn is
every running agent's step, and a request waits out two or three of them: its bytes are read after
every callback queued in the turn before, and the task that serves it runs after every callback
queued in the turn that read them. :class:`ApiFirstLoop` reads the API's sockets first in a turn,
and runs a callback of the API (one whose context has :data:`SERVES_API` set) first in the turn
after the one that queued it, behind the API's queued before it, so theirs keep their order. Every
callback queued before a turn still runs in that turn, as in asyncio: a callback of the API that
queues itself again and again, waiting for other work (anyio delivers a cancellation so), lets
that work run.

What serves the API is marked where it starts: :func:`serving_api` around the start of the HTTP
server marks its listening socket, so every connection accepted, every read of it and every task
that serves a request or a WebSocket inherits the mark. Work that a request starts and that is not
the API's, an agent above all, is started inside :func:`not_serving_api`.

Only the loop's own thread moves a callback ahead; one queued from another thread joins the end
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

    It takes over three of the base loop's private methods: the ones every callback and every ready
    socket goes through (``_call_soon``, ``_add_callback``), and a turn of the loop (``_run_once``);
    ``tests/test_api_first_loop.py`` checks the order they give on the Python it runs on."""

    _queued = 0
    """Callbacks queued since this turn's callbacks began to run: the last ones in the queue, run in
    the next turn."""
    _queued_api = 0
    """Of those, the API's: the first ones of that part of the queue."""

    def _run_once(self) -> None:
        self._queued = self._queued_api = 0
        super()._run_once()  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]

    def _call_soon(
        self, callback: Callable[..., object], args: tuple[Any, ...], context: contextvars.Context | None
    ) -> asyncio.Handle:
        handle = cast(asyncio.Handle, super()._call_soon(callback, args, context))  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
        self._queued += 1
        # the handle's context is this one, or the one given: read the mark there (cheaper than on the handle)
        if (SERVES_API.get() if context is None else context.get(SERVES_API, False)) and self._on_loop():
            ready = self._queue()
            if ready and ready[-1] is handle:  # a cancelled handle is not queued
                ahead = max(0, len(ready) - self._queued + self._queued_api)
                _move_last(ready, ahead)
                self._queued_api += 1
        return handle

    def _add_callback(self, handle: asyncio.Handle) -> None:
        """A ready socket's callback, queued before the turn's callbacks run: one of the API's goes
        first in this turn, behind the API's queued before it."""
        super()._add_callback(handle)  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
        if _serves_api(handle) and self._on_loop():
            ready = self._queue()
            if ready and ready[-1] is handle:
                ahead = 0
                while ahead < len(ready) - 1 and _serves_api(ready[ahead]):
                    ahead += 1
                _move_last(ready, ahead)

    def _on_loop(self) -> bool:
        thread = cast(int | None, self._thread_id)  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
        return threading.get_ident() == thread

    def _queue(self) -> deque[asyncio.Handle]:
        return cast(deque[asyncio.Handle], self._ready)  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]


def _move_last(ready: deque[asyncio.Handle], index: int) -> None:
    """Move the last handle of ``ready`` to ``index``."""
    if index < len(ready) - 1:
        ready.insert(index, ready.pop())
