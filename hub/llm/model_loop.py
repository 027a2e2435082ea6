"""The event loop model calls are made from: one asyncio loop in a daemon thread of the hub's process.

The calls themselves run in the model worker process (:mod:`dispatch.hub.llm.model_process`):
litellm's several milliseconds of Python per call would otherwise hold the interpreter lock
against the hub's event loop. What is left here, writing each request to the worker and reading
its answer (a transcript's JSON, often large), stays off the hub's loop too, which only awaits the
result. The worker and its pipes are process-wide, so this loop is too: one per process, started
on the first call (:func:`model_loop`).
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Callable, Coroutine
from functools import cache
from typing import Any, TypeVar

_T = TypeVar("_T")
CLOSE_TIMEOUT_S = 5.0
"""How long closing waits for what still runs on the loop once cancelled."""


class ModelLoop:
    """An asyncio loop running in a daemon thread, for coroutines submitted from other loops."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dispatch-model-calls", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def close(self) -> None:
        """Stop the loop, cancel what still runs on it (litellm's logging worker), and close it."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        if pending:  # bounded: a subprocess start cancelled midway waits for its child, which may be slow
            self._loop.run_until_complete(asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S))
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def submit(self, call: Callable[[], Coroutine[Any, Any, object]]) -> None:
        """Start ``call()`` on this loop and return at once (its result and errors are dropped)."""
        asyncio.run_coroutine_threadsafe(call(), self._loop)

    async def run(self, call: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """Run ``call()`` on this loop and return (or raise) what it does. Cancelling the caller
        cancels the call there too."""
        future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        return await asyncio.wrap_future(future)


@cache
def model_loop() -> ModelLoop:
    """The process's model-call loop, started on first use."""
    return ModelLoop()
