"""The hub's side of the model worker (:mod:`dispatch.hub.llm.model_worker`): a pool of worker
processes per hub process (``limits.model_workers``, default the number of cores), started with the
command and again if one stops, driven from the model-call loop
(:mod:`dispatch.hub.llm.model_loop`).

Each call goes to the worker with the fewest calls in flight (a ready one before one still loading
litellm), and runs concurrently with the others over that worker's stdin and stdout, matched by id
(a streamed call's answer comes as frames of its parts, then the answer). One worker's CPU per call
bounds how many calls it makes a second whatever the model's latency; more workers spread that over
the machine's cores. A failed call raises :class:`RemoteCallError` with the worker's
classification; the key router turns it into a :class:`~dispatch.hub.llm.failures.Failure` with its
own clock, and anything else shows the error Dispatch would have raised in-process. If a worker
dies, its calls fail as transient (the router retries them, on another worker) and a new one starts
in its place. Cancelling a call cancels it in the worker.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import signal
import sys
from collections.abc import Coroutine
from functools import cache
from typing import Any

from dispatch.hub.errors import ContextTooLong, ModelCallError, UserError
from dispatch.hub.llm.failures import Failure, FailureKind, reset_from_headers
from dispatch.hub.llm.model_host import HostClient, HostedWorker
from dispatch.hub.llm.model_worker import (
    LINE_LIMIT,
    READY_LINE,
    CallAnswer,
    CallFailed,
    CallRequest,
    MeasureRequest,
    keep_thread,
)
from dispatch.hub.llm.types import Completion, DeltaSink, JsonDict, Measured

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
    detail = "the model worker process stopped" + (f" (exit code {code})" if code is not None else "")
    return CallFailed(kind=FailureKind.transient.value, detail=detail, headers={}, user_error=False, message=detail)


ANSWERS_PER_TURN = 16
"""How many of a worker's lines are read, at most, before the loop turns: answers arrive in bursts
when hundreds of agents call at once, and the loop may be the hub's own (every other task of the
hub waits out a turn)."""
CLOSE_TIMEOUT_S = 5.0
"""How long :meth:`ModelProcess.close` waits for the workers to be gone."""
AFFINITY_SLACK = 8
"""How many more calls in flight than the least busy worker the one holding a thread's messages
may have and still get the thread's next call."""

WorkerProcess = asyncio.subprocess.Process | HostedWorker
"""A worker this process started, or one the model host forked for it."""


def _exit_code(process: WorkerProcess) -> int | None:
    """A stopped worker's exit code; None while it runs, and for a hosted one (not our child)."""
    return None if isinstance(process, HostedWorker) else process.returncode


def _kill(process: WorkerProcess) -> None:
    """End a worker now; one already reaped is left alone, its pid may be another process's by now."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)


class _Running:
    """One worker process and the calls waiting on it."""

    def __init__(self, process: WorkerProcess) -> None:
        self.process = process
        self.pending: dict[int, asyncio.Future[CallAnswer]] = {}
        self.threads: dict[str, list[JsonDict]] = {}
        """Per thread (an agent), the messages its last call here sent: the worker keeps them too
        (up to :data:`THREADS_KEPT`), so the next call sends only what follows them."""
        self.sinks: dict[int, DeltaSink] = {}
        """Where the parts of a streamed call's answer go, by call id, until its answer."""
        self.ready = False
        """Whether the worker has loaded litellm (it says so before any answer)."""
        self.loaded = asyncio.Event()
        """Set when :attr:`ready` is."""
        self.env_sent = {} if isinstance(process, HostedWorker) else dict(os.environ)
        """The environment the worker has: what it inherited (a hosted one's is the host's, so its
        first call sends the whole), then what the last call sent."""

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        read = 0
        while line := await stdout.readline():
            read += 1
            if read % ANSWERS_PER_TURN == 0:  # a line already buffered is read without a turn of the loop
                await asyncio.sleep(0)
            if line == READY_LINE:
                self.ready = True
                self.loaded.set()
                continue
            answer = CallAnswer.model_validate_json(line)
            if answer.deltas is not None:  # a streamed call's parts, before its answer
                sink = self.sinks.get(answer.id)
                if sink is not None:
                    for delta in answer.deltas:
                        sink(delta)
                continue
            self.sinks.pop(answer.id, None)
            waiting = self.pending.pop(answer.id, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(answer)
        code = await self.process.wait()
        for waiting in self.pending.values():
            if not waiting.done():
                waiting.set_exception(RemoteCallError(_stopped(code)))
        self.pending.clear()
        self.sinks.clear()


def _kept_prefix(running: _Running, request: CallRequest) -> int:
    """How many of ``request``'s messages the worker has from its thread's last call: all of those,
    when this call's begin with them (the same message objects, compared at C speed), else 0."""
    if request.thread is None:
        return 0
    kept = running.threads.get(request.thread)
    if not kept or len(kept) > len(request.messages):
        return 0
    return len(kept) if request.messages[: len(kept)] == kept else 0


def default_workers() -> int:
    """The number of cores this process may run on (at least 1): ``limits.model_workers``' default."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class ModelProcess:
    """The pool of worker processes, each started on first use; every method runs on the
    model-call loop."""

    def __init__(self, workers: int | None = None) -> None:
        self._size = workers or default_workers()
        self._slots: list[_Running | None] = [None] * self._size
        self._lock: asyncio.Lock | None = None
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[object]] = set()
        self._stopping = False
        self._host = HostClient(LINE_LIMIT)
        atexit.register(self._stop)  # before the model loop closes, made first (atexit runs in reverse)

    def _stop(self) -> None:
        """End every worker as this process exits (one would otherwise finish loading litellm first)."""
        self._stopping = True
        self._host.abandon()
        for running in self._slots:
            if running is not None:
                _kill(running.process)

    async def close(self) -> None:
        """End every worker now and wait until each is gone and its pipes are closed: what a command
        whose own loop the calls ran on does before that loop ends."""
        self._stop()
        for running in self._slots:
            if running is not None and running.process.stdin is not None:
                running.process.stdin.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=CLOSE_TIMEOUT_S)

    def _background(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def workers(self) -> int:
        """How many worker processes the pool keeps."""
        return self._size

    def _alive(self) -> list[_Running]:
        return [running for running in self._slots if running is not None and running.alive]

    @property
    def loading(self) -> bool:
        """Whether workers run but none has loaded litellm yet (the first call waits for one)."""
        alive = self._alive()
        if any(running.ready for running in alive):
            return False
        return bool(alive) or self._host.waiting > 0  # its own starting, or the model host loading

    @property
    def ready(self) -> int:
        """How many running workers have loaded litellm."""
        return sum(1 for running in self._alive() if running.ready)

    @property
    def pids(self) -> list[int]:
        """The running workers' process ids, one per slot of the pool that has one."""
        return [running.process.pid for running in self._alive()]

    @property
    def pid(self) -> int | None:
        """A running worker's process id (the first slot's); None before the first start or after
        every worker stopped."""
        return next(iter(self.pids), None)

    def in_flight(self) -> dict[int, int]:
        """Per running worker (by process id), the calls it is making now."""
        return {running.process.pid: len(running.pending) for running in self._alive()}

    async def _spawn(self, slot: int) -> _Running:
        process = await self._host.worker() or await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "dispatch.hub.llm.model_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
        )
        running = self._slots[slot] = _Running(process)
        self._background(self._read(slot, running))
        return running

    async def _read(self, slot: int, running: _Running) -> None:
        await running.read()
        # A worker that had loaded litellm and stopped is replaced at once, so the next call finds
        # one loaded; one that stopped while loading is started again by the next call (a worker
        # that cannot start does not loop here).
        if running.ready and not self._stopping and slot < self._size and self._slots[slot] is running:
            await self._started(slot)

    async def _started(self, slot: int) -> _Running:
        if self._lock is None:
            self._lock = asyncio.Lock()
        slot = min(slot, self._size - 1)  # a slot the pool dropped meanwhile: the last one's
        async with self._lock:
            running = self._slots[slot]
            if running is None or not running.alive:
                running = await self._spawn(slot)
            return running

    def _resize(self, workers: int) -> None:
        """Keep ``workers`` processes: more start on demand, those beyond it end once their calls
        are answered (their stdin closes)."""
        for running in self._slots[workers:]:
            if running is not None and running.process.stdin is not None:
                running.process.stdin.close()
        self._slots = self._slots[:workers] + [None] * (workers - len(self._slots))
        self._size = workers

    async def start(self, workers: int | None = None) -> None:
        """Start the workers now (each loads litellm, which takes seconds of CPU), so the first call
        need not wait; ``workers`` sets the pool's size first. The first starts at once, the others
        once it is ready: loading them all together would slow the first, and the command's start."""
        if workers is not None and workers != self._size:
            self._resize(workers)
        first = await self._started(0)
        if self._size > 1:
            self._background(self._start_the_rest(first))

    async def _start_the_rest(self, first: _Running) -> None:
        await first.loaded.wait()  # never, if it dies loading: then calls start them
        for slot in range(1, self._size):
            await self._started(slot)

    async def _chosen(self, thread: str | None = None) -> _Running:
        """The worker for the next call: a running one with the fewest calls in flight, ready ones
        first, unless the one that made ``thread``'s last call is not much busier (it has the
        thread's messages); an empty or stopped slot is started when no worker runs."""
        alive = [(slot, running) for slot, running in enumerate(self._slots) if running is not None and running.alive]
        ready = [(slot, running) for slot, running in alive if running.ready] or alive
        if not ready:
            return await self._started(0)
        for slot, running in enumerate(self._slots):  # a stopped one is replaced, off this call's way
            if running is None or not running.alive:
                self._background(self._started(slot))
                break
        least = min(ready, key=lambda entry: len(entry[1].pending))[1]
        if thread is not None:
            for _, running in ready:
                if thread in running.threads and len(running.pending) <= len(least.pending) + AFFINITY_SLACK:
                    return running
        return least

    async def call(self, request: CallRequest, on_delta: DeltaSink | None = None) -> Completion:
        """Make the call in a worker; RemoteCallError if it fails there. A streamed call
        (``request.stream``) hands each part of its answer to ``on_delta`` as its frame arrives. A
        call of a thread (``request.thread``) sends only the messages that follow what the worker
        kept of the thread's last call, when they begin this one's (the transcript only grows
        between steps; compaction sends other messages, and then they are sent whole)."""
        running = await self._chosen(request.thread)
        result = await self._send(running, request, on_delta, _kept_prefix(running, request))
        if result.resend:
            result = await self._send(running, request, on_delta, 0)
        if result.failed is not None:
            raise RemoteCallError(result.failed)
        if result.completion is None:
            raise ModelCallError(f"the model worker answered call {request.id} with neither a completion nor a failure")
        return result.completion

    async def _send(
        self, running: _Running, request: CallRequest, on_delta: DeltaSink | None, reuse: int
    ) -> CallAnswer:
        environment = dict(os.environ)
        changed = environment if environment != running.env_sent else None
        running.env_sent = environment
        update = {"id": next(self._ids), "env": changed, "reuse": reuse, "messages": request.messages[reuse:]}
        sent = request.model_copy(update=update)
        if request.thread is not None:
            keep_thread(running.threads, request.thread, request.messages)
        if on_delta is not None:
            running.sinks[sent.id] = on_delta
        try:
            return await self._exchange(running, sent.id, sent.model_dump_json().encode())
        finally:
            running.sinks.pop(sent.id, None)

    async def measure(self, request: MeasureRequest) -> Measured:
        """litellm's window of a model and, given messages, their tokens, from the worker."""
        running = await self._chosen()
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
            raise RemoteCallError(_stopped(_exit_code(running.process))) from error


@cache
def model_process() -> ModelProcess:
    """The process's pool of model workers (one per hub process, like its model-call loop)."""
    return ModelProcess()
