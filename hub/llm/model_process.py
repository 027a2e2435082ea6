"""The hub's side of the model worker (:mod:`dispatch.hub.llm.model_worker`): one worker process
per hub process, started on the first model call and again if it stops, driven from the model-call
loop (:mod:`dispatch.hub.llm.model_loop`).

Calls run concurrently over the worker's stdin and stdout, matched by id. A failed call raises
:class:`RemoteCallError` with the worker's classification; the key router turns it into a
:class:`~dispatch.hub.llm.failures.Failure` with its own clock, and anything else shows the error
Dispatch would have raised in-process. If the worker dies, its calls fail as transient (the router
retries them on a new worker). Cancelling a call cancels it in the worker.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import signal
import sys
from functools import cache

from dispatch.hub.errors import ContextTooLong, ModelCallError, UserError
from dispatch.hub.llm.failures import Failure, FailureKind, reset_from_headers
from dispatch.hub.llm.model_worker import (
    LINE_LIMIT,
    READY_LINE,
    CallAnswer,
    CallFailed,
    CallRequest,
    MeasureRequest,
)
from dispatch.hub.llm.types import Completion, Measured

__all__ = ["CallRequest", "MeasureRequest", "ModelProcess", "RemoteCallError", "model_process"]


class RemoteCallError(Exception):
    """A model call that failed in the worker, as the worker classified it."""

    def __init__(self, failed: CallFailed) -> None:
        super().__init__(failed.message)
        self.failed = failed

    def failure(self, now: float) -> Failure:
        """The failure for the key router, a rate limit's reset read from the headers at ``now``."""
        kind = FailureKind(self.failed.kind)
        reset = reset_from_headers(self.failed.headers, now) if kind is FailureKind.rate_limit else None
        return Failure(kind, reset, self.failed.detail)

    def dispatch_error(self) -> Exception:
        """The error Dispatch shows: the user's (an unknown model), a context too long, or the call's."""
        if self.failed.user_error:
            return UserError(self.failed.message)
        if self.failed.kind == FailureKind.context.value:
            return ContextTooLong(self.failed.message)
        return ModelCallError(self.failed.message)


def _stopped(code: int | None) -> CallFailed:
    detail = f"the model worker process stopped (exit code {code})"
    return CallFailed(kind=FailureKind.transient.value, detail=detail, headers={}, user_error=False, message=detail)


def _kill(process: asyncio.subprocess.Process) -> None:
    """End the worker as this process exits (it would otherwise finish loading litellm first); one
    already reaped is left alone, its pid may be another process's by now."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)


class _Running:
    """One worker process and the calls waiting on it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pending: dict[int, asyncio.Future[CallAnswer]] = {}
        self.ready = False
        """Whether the worker has loaded litellm (it says so before any answer)."""

    async def read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        while line := await stdout.readline():
            if line == READY_LINE:
                self.ready = True
                continue
            answer = CallAnswer.model_validate_json(line)
            waiting = self.pending.pop(answer.id, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(answer)
        code = await self.process.wait()
        for waiting in self.pending.values():
            if not waiting.done():
                waiting.set_exception(RemoteCallError(_stopped(code)))
        self.pending.clear()


class ModelProcess:
    """The worker process, started on first use; every method runs on the model-call loop."""

    def __init__(self) -> None:
        self._running: _Running | None = None
        self._lock: asyncio.Lock | None = None
        self._ids = itertools.count(1)
        self._readers: set[asyncio.Task[None]] = set()
        self._env_sent: dict[str, str] | None = None

    @property
    def loading(self) -> bool:
        """Whether the worker runs but has not loaded litellm yet (the first call waits for it)."""
        running = self._running
        return running is not None and running.process.returncode is None and not running.ready

    @property
    def pid(self) -> int | None:
        """The running worker's process id; None before the first call or after it stopped."""
        running = self._running
        return running.process.pid if running is not None and running.process.returncode is None else None

    async def _started(self) -> _Running:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            running = self._running
            if running is None or running.process.returncode is not None:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "dispatch.hub.llm.model_worker",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=LINE_LIMIT,
                )
                running = self._running = _Running(process)
                atexit.register(_kill, process)  # before the model loop closes (atexit runs in reverse)
                self._env_sent = dict(os.environ)  # what it inherited
                reader = asyncio.get_running_loop().create_task(running.read())
                self._readers.add(reader)
                reader.add_done_callback(self._readers.discard)
            return running

    async def start(self) -> None:
        """Start the worker now (it loads litellm, which takes seconds), so the first call need not wait."""
        await self._started()

    async def call(self, request: CallRequest) -> Completion:
        """Make the call in the worker; RemoteCallError if it fails there."""
        running = await self._started()
        environment = dict(os.environ)
        changed = environment if environment != self._env_sent else None
        self._env_sent = environment
        request = request.model_copy(update={"id": next(self._ids), "env": changed})
        result = await self._exchange(running, request.id, request.model_dump_json().encode())
        if result.failed is not None:
            raise RemoteCallError(result.failed)
        if result.completion is None:
            raise ModelCallError(f"the model worker answered call {request.id} with neither a completion nor a failure")
        return result.completion

    async def measure(self, request: MeasureRequest) -> Measured:
        """litellm's window of a model and, given messages, their tokens, from the worker."""
        running = await self._started()
        ident = next(self._ids)
        line = b'{"id": %d, "measure": %s}' % (ident, request.model_dump_json().encode())
        result = await self._exchange(running, ident, line)
        return result.measured or Measured()

    async def _exchange(self, running: _Running, ident: int, line: bytes) -> CallAnswer:
        """Write one request line and wait for its answer (cancelling it in the worker if cancelled)."""
        answer = asyncio.get_running_loop().create_future()
        running.pending[ident] = answer
        stdin = running.process.stdin
        assert stdin is not None
        try:
            stdin.write(line + b"\n")
            await stdin.drain()
            return await answer
        except asyncio.CancelledError:
            running.pending.pop(ident, None)
            if not stdin.is_closing():
                stdin.write(b'{"id": %d, "cancel": true}\n' % ident)
            raise
        except (BrokenPipeError, ConnectionResetError) as error:
            running.pending.pop(ident, None)
            raise RemoteCallError(_stopped(running.process.returncode)) from error


@cache
def model_process() -> ModelProcess:
    """The process's model worker (one per hub process, like its model-call loop)."""
    return ModelProcess()
