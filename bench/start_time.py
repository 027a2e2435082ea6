"""Start-up costs of the ``dispatch`` command, each a fresh subprocess with ``DISPATCH_HOME`` in a
temp dir:

- ``dispatch --help``: the wall time from launch to exit;
- ``dispatch serve --port 0``: the wall time from launch until ``GET /api/health`` answers 200
  (the URL it prints on stdout tells the port), then it is stopped with SIGTERM;
- ``dispatch run``: the wall time from launch until its first model request reaches an
  OpenAI-compatible endpoint (a bare listener here, which records the moment and hangs up), then
  it is killed: the config, the hub, the tree, the model worker and litellm all load first. Three
  ways: with the model host running (its worker is a fork of the host, litellm loaded: the usual
  case after a session's first command), with no host yet (the run starts it and waits for it:
  a session's first command), and with the host turned off (the run's own worker loads litellm).
  The host lives in a runtime folder of the benchmark's and is stopped at the end;
- ``dispatch demo --port 0``: from launch until ``GET /api/health`` answers 200.

``python -m bench.start_time [--samples N] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench._common import report
from dispatch.hub.llm.model_host import HOST_ENV

DISPATCH = [sys.executable, "-m", "dispatch.hub.cli"]
TIMEOUT_S = 60.0


def help_time(env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([*DISPATCH, "--help"], env=env, capture_output=True, check=True, timeout=TIMEOUT_S)
    return time.perf_counter() - started


def _url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(TIMEOUT_S):
            raise RuntimeError("dispatch serve printed no URL")
    line = process.stdout.readline()
    found = re.match(r"(http://[^/]+)/", line)
    if found is None:
        raise RuntimeError(f"dispatch serve printed {line!r}")
    return found[1]


def serve_time(root: Path, env: dict[str, str], command: str = "serve") -> float:
    started = time.perf_counter()
    process = subprocess.Popen(
        [*DISPATCH, command, "--port", "0", *(["--root", str(root)] if command == "serve" else [])],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        base_url = _url(process)
        deadline = started + TIMEOUT_S
        with httpx.Client(timeout=5) as client:
            while True:
                try:
                    if client.get(base_url + "/api/health").status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError("dispatch serve did not become healthy")
                time.sleep(0.005)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


class FirstRequest:
    """A listener that notes when the first HTTP request's headers arrive, then hangs up."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.at: float | None = None
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        connection, _ = self.sock.accept()
        with connection:
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                received += chunk
            self.at = time.perf_counter()

    def close(self) -> None:
        self.sock.close()


def run_time(root: Path, env: dict[str, str]) -> float:
    listener = FirstRequest()
    base = f"http://127.0.0.1:{listener.port}/v1"
    run_env = {**env, "OPENAI_BASE_URL": base, "OPENAI_API_BASE": base, "OPENAI_API_KEY": "bench"}
    started = time.perf_counter()
    process = subprocess.Popen(
        [*DISPATCH, "run", "say hello", "--model", "openai/bench", "--root", str(root)],
        env=run_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = started + TIMEOUT_S
        while listener.at is None:
            if process.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError("dispatch run made no model request")
            time.sleep(0.005)
        return listener.at - started
    finally:
        process.kill()
        process.wait()
        listener.close()


def main(samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        root = Path(tmp) / "project"
        home.mkdir()
        root.mkdir()
        (root / "README.md").write_text("# a project\n")
        runtime = Path(tempfile.mkdtemp(prefix="dh"))  # short: a Unix socket's path is limited
        env = {**os.environ, "DISPATCH_HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
        env.pop(HOST_ENV, None)
        try:
            report("start, dispatch --help", [help_time(env) for _ in range(samples)])
            report("start, serve to /api/health", [serve_time(root, env) for _ in range(samples)])
            run_time(root, env)  # the host started
            report("start, run to its first request, model host running", [run_time(root, env) for _ in range(samples)])
            first: list[float] = []
            for index in range(samples):
                env_first = {**env, "XDG_RUNTIME_DIR": str(runtime / str(index))}
                (runtime / str(index)).mkdir(mode=0o700)
                first.append(run_time(root, env_first))
                _stop_host(env_first)
            report("start, run to its first request, model host starting", first)
            no_host = {**env, HOST_ENV: "off"}
            report("start, run to its first request, no model host", [run_time(root, no_host) for _ in range(samples)])
            report("start, demo to /api/health", [serve_time(root, env, "demo") for _ in range(samples)])
        finally:
            _stop_host(env)
            shutil.rmtree(runtime, ignore_errors=True)


def _stop_host(env: dict[str, str]) -> None:
    """Stop the model host of ``env``'s runtime folder (``dispatch stop`` stops it too)."""
    subprocess.run([*DISPATCH, "stop"], env=env, capture_output=True, check=False, timeout=60)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20, help="samples per figure (default 20)")
    parser.add_argument("--quick", action="store_true", help="a few samples, to check the benchmark runs")
    args = parser.parse_args()
    main(2 if args.quick else args.samples)
