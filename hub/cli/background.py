"""A hub in the background: started by ``dispatch mcp`` when none runs, stopped by ``dispatch stop``.

:func:`start_background_hub` runs ``dispatch serve`` as a process of its own session (so it
outlives the MCP client that asked for it: work started from Claude Desktop goes on after the app
closes), with its output appended to ``serve.log`` in the data directory, and waits until the hub
has written its address into the data directory's lock file. It serves on the usual port when that
is free, else on any free one (the lock file says which). When two commands start one at once,
the second ``serve`` finds the first's hub and exits; both use that hub.

:func:`stop_hub` sends the hub holding a data directory SIGTERM (a graceful stop: no new work,
running steps may finish, the rest is ``interrupted`` and can be resumed) and waits until it has
let go of the data directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from dispatch.hub.errors import UserError
from dispatch.hub.service.lifecycle import HubInfo, running_hub

__all__ = ["SERVE_LOG", "start_background_hub", "stop_hub"]

SERVE_LOG = "serve.log"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
_DEFAULT_PORT = 8421


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _last_error(log: Path, since: int) -> str:
    """The last line the failed ``serve`` wrote to its log (from byte ``since``)."""
    try:
        with log.open("rb") as read:
            read.seek(since)
            lines = read.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [""])[-1].removeprefix("dispatch: ").strip()


def start_background_hub(root: Path, data_dir: Path, model: str | None = None) -> HubInfo:
    """Start ``dispatch serve`` for ``root`` in the background and return the running hub once it
    serves (its own, or one another command started meanwhile). Raises :class:`UserError` with the
    hub's own words when it could not start."""
    log = data_dir / SERVE_LOG
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    since = os.fstat(descriptor).st_size
    port = _DEFAULT_PORT if _port_free(_DEFAULT_PORT) else 0
    command = [sys.executable, "-m", "dispatch.hub.cli", "serve", "--root", str(root), "--port", str(port)]
    command += [] if model is None else ["--model", model]
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=descriptor,
            start_new_session=True,
            env={**os.environ, "DISPATCH_HOME": str(data_dir)},
        )
    finally:
        os.close(descriptor)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        info = running_hub(data_dir)
        if info is not None and info.address is not None:
            return info
        code = process.poll()
        if code is not None and code != 0:
            raise UserError(f"the background hub did not start: {_last_error(log, since) or f'exit code {code}'}")
        time.sleep(0.05)
    process.terminate()
    raise UserError(f"the background hub did not start within {START_TIMEOUT_S:.0f} s; its output is in {log}")


def stop_hub(data_dir: Path, timeout_s: float = STOP_TIMEOUT_S) -> str | None:
    """Stop the hub holding ``data_dir`` and wait until it has let go; what was stopped (for the
    user), or None when no hub runs there. Raises :class:`UserError` when it cannot be stopped."""
    info = running_hub(data_dir)
    if info is None:
        return None
    if info.pid is None:
        raise UserError(f"a hub holds {data_dir} but its lock file names no pid; stop it from where it runs")
    described = f"the hub of {info.root or 'an unknown project'} (pid {info.pid})"
    try:
        os.kill(info.pid, signal.SIGTERM)
    except ProcessLookupError:
        return described
    except PermissionError:
        raise UserError(f"{described} belongs to another user; it cannot be stopped from here") from None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if running_hub(data_dir) is None:  # its lock goes with it, however it ends
            return described
        time.sleep(0.05)
    raise UserError(
        f"{described} is still stopping after {timeout_s:.0f} s (running steps finish first); "
        f"`kill -9 {info.pid}` ends it at once, and its unfinished agents can be resumed"
    )
