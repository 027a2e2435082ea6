"""``dispatch serve`` in a subprocess for the API tests: started on a free port with the test's
environment (``DISPATCH_HOME`` in a temp dir, ``OPENAI_BASE_URL`` at the scripted model when the
test uses it), ready once ``/api/health`` answers, stopped with SIGTERM. Its fixtures, ``project``
and ``served``, are registered for the whole suite in ``tests/conftest.py``. And a real hub in
this process (:func:`hub_in_a_thread`), its API served in process too (:func:`served_in_process`)."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx
import pytest
import uvicorn
from anyio.from_thread import BlockingPortal
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect

from dispatch.hub.llm.types import ModelClient
from dispatch.hub.service.hub import Hub
from tests.fakes.scripted_llm import ScriptedLLM

DISPATCH = [sys.executable, "-m", "dispatch.hub.cli"]
MODEL = "openai/scripted"
START_TIMEOUT_S = 60.0


@dataclass
class ServedHub:
    process: subprocess.Popen[str]
    base_url: str
    token: str
    stderr_path: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/api/events"

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=self.auth, timeout=30)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def signal(self, number: int = signal.SIGTERM) -> None:
        self.process.send_signal(number)

    def wait(self, timeout_s: float = 60) -> int:
        """The exit code, once the process has exited (failing the test if it does not)."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"dispatch serve did not exit; its stderr:\n{self.stderr()}") from None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        code = self.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code

    @asynccontextmanager
    async def events(self, since: int | None = 0, live: bool = True) -> AsyncGenerator[EventReader]:
        query = f"?token={self.token}" + (f"&since={since}" if since is not None else "")
        query += "" if live else "&live=false"
        async with connect(self.ws_url + query) as socket:
            yield EventReader(socket)


class EventReader:
    """The events of one WebSocket connection, read as a test needs them."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.seen: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(await self.socket.recv())
        self.seen.append(event)
        return event

    async def until(self, matches: Callable[[dict[str, Any]], bool], timeout_s: float = 60) -> dict[str, Any]:
        """Read events until one matches; fail when none does within the timeout (a hang guard)."""
        with anyio.fail_after(timeout_s):
            while not matches(event := await self.next()):
                pass
            return event


def _read_line(process: subprocess.Popen[str], stderr_path: Path) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(START_TIMEOUT_S):
            process.kill()
            raise AssertionError(f"dispatch serve printed no URL; its stderr:\n{stderr_path.read_text()}")
    return process.stdout.readline()


def start_hub(root: Path, *args: str, env: dict[str, str] | None = None) -> ServedHub:
    """``dispatch serve --port 0 --root ROOT ARGS...``, once its health check answers."""
    stderr_path = root.parent / f"serve-{time.monotonic_ns()}.stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [*DISPATCH, "serve", "--port", "0", "--root", str(root), *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env or dict(os.environ),
        )
    line = _read_line(process, stderr_path)
    found = re.fullmatch(r"(http://[^/]+)/\?token=(\S+)\n?", line)
    if found is None:
        process.kill()
        raise AssertionError(f"dispatch serve printed {line!r}; its stderr:\n{stderr_path.read_text()}")
    hub = ServedHub(process, found[1], found[2], stderr_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(hub.base_url + "/api/health", timeout=5).status_code == 200:
                return hub
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"dispatch serve did not become healthy; its stderr:\n{hub.stderr()}")
        time.sleep(0.05)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small project root."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "README.md").write_text("# a project\n")
    return root


@contextmanager
def serving(root: Path, *args: str) -> Iterator[ServedHub]:
    """:func:`start_hub` until the block ends, then SIGTERM; the hub must exit 0."""
    hub = start_hub(root, *args)
    try:
        yield hub
    finally:
        code = hub.stop()
    assert code == 0, f"dispatch serve exited {code} on SIGTERM:\n{hub.stderr()}"


@pytest.fixture
def served(scripted_llm: ScriptedLLM, project: Path) -> Iterator[ServedHub]:
    """The hub of ``project``, its agents answered by the scripted model; it must stop with exit 0."""
    with serving(project, "--deadline", "5") as hub:
        yield hub


@contextmanager
def hub_in_a_thread(tmp_path: Path, model: ModelClient) -> Iterator[tuple[BlockingPortal, Hub]]:
    """A real :class:`Hub` (project and data directory under ``tmp_path``) answered by ``model``,
    its event loop in a thread behind a blocking portal: sync tests (a ``TestClient`` given the
    portal, a uvicorn server started in it) reach the hub in the loop it lives in."""
    root, data = tmp_path / "project", tmp_path / "data"
    root.mkdir(exist_ok=True)
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(Hub.open(root, data, model=model, default_model=MODEL)) as hub,
    ):
        yield portal, hub


@contextmanager
def served_in_process(portal: BlockingPortal, app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, in the portal's event loop; yields its
    base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    served = portal.start_task_soon(lambda: server.serve(sockets=[sock]))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if served.done() or time.monotonic() > deadline:
            raise AssertionError(f"the API did not start: {served.exception() if served.done() else 'timeout'}")
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        served.result(timeout=30)
        sock.close()
