"""The event loop model calls are made from: the hub's own loop when it serves, else one asyncio
loop in a daemon thread of the process.

The calls themselves run in the model worker processes (:mod:`dispatch.hub.llm.model_process`):
litellm's several milliseconds of Python per call would otherwise hold the interpreter lock
against the hub's event loop. What is left here is writing each request to a worker and reading
its answer. The workers and their pipes are process-wide, and bound to the loop they were started
on, so this loop is too: one per process (:func:`model_loop`).

A command whose event loop lasts as long as the process (``dispatch serve``, ``dispatch demo``)
makes its calls on that loop (:func:`~dispatch.hub.llm.client.model_calls_on_this_loop`, before its
first call): a call is then an await, where handing it to a thread's loop and its answer back costs
two wake-ups of a loop in another thread and the interpreter lock changing hands each time (some
6% of an agent step's CPU, a tenth of the hub's share: bench/README.md). Every other caller
(``dispatch run``, which starts its workers before its loop exists so that litellm loads
meanwhile; tests, each on a loop of its own) gets the thread's loop, started on first use.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")
CLOSE_TIMEOUT_S = 5.0
"""How long closing waits for what still runs on the loop once cancelled."""


class ModelLoop:
    """An asyncio loop for coroutines submitted from any loop: a loop of its own in a daemon
    thread, or (``loop`` given) the running loop of the command, whose calls run on it directly."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._thread: threading.Thread | None = None
        if loop is not None:
            self._loop = loop
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dispatch-model-calls", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def close(self) -> None:
        """Stop the thread's loop, cancel what still runs on it (litellm's logging worker), and close
        it (a command's loop is the command's to close)."""
        if self._thread is None or self._loop.is_closed():
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

    def _here(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:  # no loop runs in this thread
            return False

    def submit(self, call: Callable[[], Coroutine[Any, Any, object]]) -> None:
        """Start ``call()`` on this loop and return at once (its result and errors are dropped)."""
        if self._here():
            _keep(self._loop.create_task(call()))
        else:
            asyncio.run_coroutine_threadsafe(call(), self._loop)

    async def run(self, call: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """Run ``call()`` on this loop and return (or raise) what it does. Cancelling the caller
        cancels the call there too."""
        if self._here():
            return await call()
        future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        return await asyncio.wrap_future(future)


_started: set[asyncio.Task[object]] = set()


def _keep(task: asyncio.Task[object]) -> None:
    """Hold a started task until it ends (the loop keeps only a weak reference)."""
    _started.add(task)
    task.add_done_callback(_started.discard)


_process_loop: ModelLoop | None = None


def model_loop() -> ModelLoop:
    """The process's model-call loop: the command's (:func:`adopt_running_loop`), else a thread's,
    started on first use."""
    global _process_loop
    if _process_loop is None:
        _process_loop = ModelLoop()
    return _process_loop


def adopt_running_loop() -> bool:
    """Make the process's model calls on the running loop, until :func:`release_loop`; False (and
    nothing changed) when calls already have a loop (a command that started its workers first)."""
    global _process_loop
    if _process_loop is not None:
        return False
    _process_loop = ModelLoop(asyncio.get_running_loop())
    return True


def release_loop() -> None:
    """Forget the adopted loop: a later call starts a thread's loop."""
    global _process_loop
    _process_loop = None
