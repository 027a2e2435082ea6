"""The hub's lifecycle: one hub per data directory, its log file, and a graceful stop on signals.

* :class:`HubLock`: ``hub.lock`` in the data directory, held (``flock``) while the hub runs and
  holding ``{"pid", "address", "started_at"}``; a second hub on the same directory gets
  :class:`HubRunning`, naming the running one's pid and address. :func:`running_hub` tells other
  commands (``dispatch resume``, ``dispatch logs``) whether one runs and where. The OS releases the
  lock when the process dies, so a crash leaves no stale lock.
* :func:`hub_logging`: the hub's log, ``hub.log`` (0600) in the data directory. Tracebacks go
  there and nowhere else (the ``dispatch`` loggers stop propagating to the terminal meanwhile).
  When the file cannot be written (a full disk), stderr gets one line saying so, and then at most
  one line a minute counting the records lost, never a traceback per record.
* :func:`drain`: stop the agents gracefully (each stops at the end of its current step), and after
  a deadline interrupt what still runs. Every stopped agent is ``interrupted``, resumable.
* :func:`execution_engine`: Ray's lifetime in the hub (``execution.engine: ray``): a local
  instance started when the hub opens and stopped when it closes, or a cluster joined and left;
  nothing (and no Ray import) with ``engine: local``. Tool hosts on nodes that do not share the
  data directory get a copy of the project (:mod:`dispatch.hub.changes.travel`).
* :func:`serve_until_signalled`: what ``dispatch serve`` runs: serve until SIGINT or SIGTERM, then
  stop the hub gracefully and return 0; a second signal exits the process at once (whatever was
  acknowledged is committed already, so nothing acknowledged is lost).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from io import TextIOWrapper
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread

from dispatch.hub.agents.spec import AgentState
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.changes.travel import GitTravel
from dispatch.hub.config.execution import ExecutionConfig
from dispatch.hub.errors import UserError
from dispatch.hub.mounts.hosts import HostEngine
from dispatch.hub.store.db import data_dir as default_data_dir

LOCK_FILE = "hub.lock"
LOG_FILE = "hub.log"
DEFAULT_DEADLINE_S = 30.0
"""How long a graceful stop lets running steps finish before interrupting them."""


@dataclass(frozen=True)
class HubInfo:
    """What the lock file says about the hub holding it."""

    pid: int | None
    address: str | None
    started_at: str | None
    root: str | None = None
    """The project the hub serves."""

    def describe(self) -> str:
        return f"pid {self.pid or 'unknown'}, address {self.address or 'none (not serving HTTP)'}"


def prepare_data_dir(data_dir: Path | None) -> Path:
    """The data directory (``$DISPATCH_HOME`` by default), created 0700 when missing."""
    home = resolved((data_dir or default_data_dir()).expanduser())
    if not home.exists():
        home.mkdir(parents=True, mode=0o700)
        home.chmod(0o700)  # mkdir's mode is masked by the umask
    return home


def resolved(path: Path) -> Path:
    """``path`` made absolute, symlinks resolved (a sync helper: async code may not touch the disk)."""
    return path.resolve()


class HubRunning(UserError):
    """Another hub holds the data directory."""

    def __init__(self, data_dir: Path, info: HubInfo) -> None:
        super().__init__(
            f"a hub is already running on the data directory {data_dir} ({info.describe()}); "
            "stop it first, or give this one another data directory (DISPATCH_HOME)"
        )
        self.info = info


def _read_info(path: Path) -> HubInfo:
    for _ in range(20):  # the holder writes its details right after taking the lock
        with suppress(OSError, ValueError):
            raw = json.loads(path.read_text() or "null")
            if isinstance(raw, dict):
                return HubInfo(raw.get("pid"), raw.get("address"), raw.get("started_at"), raw.get("root"))  # pyright: ignore[reportUnknownArgumentType, reportUnknownMemberType]
        time.sleep(0.05)
    return HubInfo(None, None, None)


class HubLock:
    """The data directory's lock, held by this process until :meth:`release`."""

    def __init__(self, path: Path, descriptor: int, root: Path | None = None) -> None:
        self.path = path
        self._descriptor = descriptor
        self._root = None if root is None else str(root)
        self._started_at = datetime.now(UTC).isoformat(timespec="seconds")

    @classmethod
    def acquire(cls, data_dir: Path, address: str | None = None, root: Path | None = None) -> HubLock:
        """Take the lock, or raise :class:`HubRunning` naming the hub that has it. ``root``: the
        project this hub serves, written beside its pid for other commands."""
        path = data_dir / LOCK_FILE
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise HubRunning(data_dir, _read_info(path)) from None
        lock = cls(path, descriptor, root)
        lock.advertise(address)
        return lock

    def advertise(self, address: str | None) -> None:
        """Write this hub's pid and address (e.g. ``http://127.0.0.1:8421``) into the lock file."""
        body = {"pid": os.getpid(), "address": address, "started_at": self._started_at, "root": self._root}
        data = json.dumps(body).encode()
        os.ftruncate(self._descriptor, 0)
        os.pwrite(self._descriptor, data, 0)
        os.fsync(self._descriptor)

    def release(self) -> None:
        if self._descriptor < 0:
            return
        with suppress(OSError):
            os.ftruncate(self._descriptor, 0)
        fcntl.flock(self._descriptor, fcntl.LOCK_UN)
        os.close(self._descriptor)
        self._descriptor = -1


def running_hub(data_dir: Path) -> HubInfo | None:
    """The hub holding ``data_dir``, or None when none runs there."""
    path = data_dir / LOCK_FILE
    if not path.exists():
        return None
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_info(path)
    finally:
        os.close(descriptor)  # closing drops a lock taken just now
    return None


LOG_FALLBACK_EVERY_S = 60.0
"""While ``hub.log`` cannot be written, stderr hears of it at most this often."""


class _PrivateLog(RotatingFileHandler):
    """A rotating log whose files are created 0600. A record it cannot write is counted, and
    stderr told in one line, at most every :data:`LOG_FALLBACK_EVERY_S` (logging's own fallback
    prints a traceback per record: a flood while the disk is full)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
        self.lost = 0
        self._told_at: float | None = None

    def _open(self) -> TextIOWrapper:
        descriptor = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(descriptor, "a", encoding=self.encoding or "utf-8")

    def emit(self, record: logging.LogRecord) -> None:
        lost = self.lost
        super().emit(record)
        if self.lost == lost and lost:
            _say(f"{self.baseFilename} can be written again; {lost} log records were lost")
            self.lost, self._told_at = 0, None

    def handleError(self, record: logging.LogRecord) -> None:
        self.lost += 1
        error = sys.exc_info()[1]
        stream, self.stream = self.stream, None  # pyright: ignore[reportAttributeAccessIssue]
        with suppress(OSError, ValueError):  # what it could not write is dropped; the next record reopens
            if stream is not None:  # pyright: ignore[reportUnnecessaryComparison]
                stream.close()
        now = time.monotonic()
        if self._told_at is not None and now - self._told_at < LOG_FALLBACK_EVERY_S:
            return
        self._told_at = now
        why = getattr(error, "strerror", None) or error or "unknown error"
        last = record.getMessage()[:200]
        _say(f"cannot write {self.baseFilename} ({why}); {self.lost} log records lost so far, the last: {last!r}")


@contextmanager
def hub_logging(data_dir: Path) -> Generator[Path]:
    """Log the ``dispatch`` loggers (INFO and up, tracebacks included) to ``hub.log`` only."""
    path = data_dir / LOG_FILE
    handler = _PrivateLog(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("dispatch")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield path
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(level)
        logger.propagate = propagate


@asynccontextmanager
async def execution_engine(config: ExecutionConfig, home: Path) -> AsyncGenerator[HostEngine | None]:
    """Where agents' tool hosts run for the hub's lifetime: None with ``engine: local``. ``home``:
    the data directory, whose probe file tells the nodes that share the hub's files."""
    if config.engine == "local":
        yield None
        return
    from dispatch.hub.mounts.cluster import RayEngine  # Ray is loaded only for this engine

    engine = await anyio.to_thread.run_sync(RayEngine.start, config)
    try:
        await anyio.to_thread.run_sync(engine.carry_files, home, GitTravel())
        yield engine
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(engine.stop)


async def drain(tree: AgentTree, deadline_s: float) -> None:
    """Let each running step finish (up to ``deadline_s``), then interrupt every agent still
    going; returns once none runs. Agents blocked waiting (children, the user, a key) do not
    hold the stop up: they are interrupted as soon as no agent is in the middle of a step."""
    tree.drain()
    async with tree.events.subscribe() as changes:
        with anyio.move_on_after(deadline_s):
            while any(a.state is AgentState.running for a in tree.agents.values()):
                await changes.receive()  # every state change is an event
    for agent in list(tree.agents.values()):
        tree.interrupt(agent.id)
    with anyio.move_on_after(max(deadline_s, 5.0)):
        for agent in list(tree.agents.values()):
            await agent.finished.wait()


class Stoppable(Protocol):
    async def stop(self, deadline_s: float = DEFAULT_DEADLINE_S) -> None: ...


def _say(text: str) -> None:
    print(f"dispatch: {text}", file=sys.stderr, flush=True)


async def serve_until_signalled(
    hub: Stoppable,
    *,
    serve: Callable[[], Awaitable[None]] | None = None,
    stop_serving: Callable[[], None] | None = None,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> int:
    """Run ``serve()`` (or just wait) until SIGINT or SIGTERM, then: stop taking new work, let
    running steps finish up to ``deadline_s``, persist everything, mark what is left
    ``interrupted`` (:meth:`Hub.stop`), call ``stop_serving()`` and wait for ``serve()`` to return;
    returns 0, the exit code. A second signal meanwhile exits the process at once (128 + signal).
    When ``serve()`` returns by itself the hub is stopped the same way.

    ``dispatch serve`` passes uvicorn's ``server.serve`` and ``lambda: setattr(server,
    "should_exit", True)``, with uvicorn's own signal handling off (``Server.capture_signals``
    replaced by a no-op context manager), so that these handlers see the signals."""
    finished = anyio.Event()
    stop = anyio.Event()

    async def serving() -> None:
        try:
            if serve is not None:
                await serve()
            else:
                await anyio.sleep_forever()
        finally:
            finished.set()
            stop.set()

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def watch() -> None:
            async for number in signals:
                if not stop.is_set():
                    grace = f"; running steps may finish for {deadline_s:g} s" if deadline_s > 0 else ""
                    _say(f"{signal.Signals(number).name}: stopping{grace}")
                    stop.set()
                else:
                    _say(f"{signal.Signals(number).name} again: exiting now")
                    os._exit(128 + number)

        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            group.start_soon(serving)
            await stop.wait()
            await hub.stop(deadline_s)
            if stop_serving is not None:
                stop_serving()
            with anyio.move_on_after(max(deadline_s, 5.0)):
                await finished.wait()
            group.cancel_scope.cancel()
    return 0
