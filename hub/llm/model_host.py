"""The model host: one long-lived process per user and installation that has litellm loaded and
forks a ready model worker (:mod:`dispatch.hub.llm.model_worker`) for each command that asks.

litellm's import takes seconds of CPU, and without the host every command pays it again for each
of its workers before its first model call. With it, only the host pays it: a command's workers
are forks of the host, ready at once, and share the host's memory until they write to it. The
first command of a session starts the host (in the background, a session of its own) and takes
its workers from it as soon as it is ready; the host then waits for the next command, and ends
after :data:`DEFAULT_IDLE_S` without one (``DISPATCH_MODEL_HOST`` sets the seconds; ``off``
turns the host off: every command starts its own workers, as a host that cannot start does too).

The host listens on a Unix socket in the user's runtime directory (``$XDG_RUNTIME_DIR/dispatch``,
or ``~/.cache/dispatch``; the folder is the user's alone) whose name carries the installation's
identity (:func:`identity`: the interpreter, litellm's version, Dispatch's model-call code, the
``LITELLM_*`` variables litellm reads when imported), so a changed install never gets a stale
worker. A command connects, passes the two ends of its new worker's pipes (``SCM_RIGHTS``) and
reads back the worker's process id; the worker is then the command's exactly as a spawned one:
the same protocol on its stdin and stdout, the command's whole environment sent with its first
call (litellm reads keys and base URLs from there), killed when the command ends. The host
answers only its own user (the peer's credentials), and keeps nothing of any command's.
``python -m dispatch.hub.llm.model_host SOCKET IDLE_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

HOST_ENV = "DISPATCH_MODEL_HOST"
"""The variable that turns the host off (``off``, ``0``) or sets how long it waits for a command."""
DEFAULT_IDLE_S = 900.0
"""How long the host waits for the next command before it ends."""
START_TIMEOUT_S = 60.0
"""How long a command waits for a host it found starting before it starts its own workers."""
ANSWER_TIMEOUT_S = 5.0
"""How long a command waits for a running host to fork its worker."""
CHECK_S = 5.0
"""How often the host looks whether its socket is still its own, and its idle time."""
_SOCKET_PATH_MAX = 100  # sockaddr_un's limit is 108 bytes on Linux, the NUL included
_HOST_KEEPS = ("PATH", "HOME", "LANG", "TZ", "TMPDIR", "XDG_RUNTIME_DIR", "PYTHONPATH", "VIRTUAL_ENV")
_HOST_KEEPS_PREFIXES = ("LC_", "LITELLM_")


def _host_environment() -> dict[str, str]:
    """The environment a host starts with: no keys or anything else of the command's beyond what
    loading litellm needs (each worker is sent its command's whole environment with its first call)."""
    return {k: v for k, v in os.environ.items() if k in _HOST_KEEPS or k.startswith(_HOST_KEEPS_PREFIXES)}


def idle_seconds() -> float | None:
    """The host's idle time from the environment; None when the host is turned off."""
    raw = os.environ.get(HOST_ENV, "").strip().lower()
    if not raw:
        return DEFAULT_IDLE_S
    if raw in ("off", "0", "false", "no"):
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return DEFAULT_IDLE_S
    return seconds if seconds > 0 else None


def identity() -> str:
    """What a host must share with a command to fork its workers: the interpreter, litellm's
    version, Dispatch's model-call code (its files' sizes and times) and the ``LITELLM_*``
    variables (litellm reads some when imported)."""
    code = Path(__file__).parent
    parts = [sys.executable, sys.version]
    try:
        parts.append(version("litellm"))
    except PackageNotFoundError:
        parts.append("no litellm")
    for path in sorted(code.glob("*.py")):
        stat = path.stat()
        parts.append(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}")
    parts.extend(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("LITELLM_"))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def runtime_dir() -> Path:
    """Where this user's hosts keep their sockets."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and Path(runtime).is_dir() else Path.home() / ".cache"
    return base / "dispatch"


def socket_path() -> Path | None:
    """The socket of the host for this installation; None when the host is off or the path would
    be too long for a Unix socket."""
    if idle_seconds() is None:
        return None
    path = runtime_dir() / f"host-{identity()}.sock"
    return path if len(os.fsencode(path)) <= _SOCKET_PATH_MAX else None


# -- the command's side ------------------------------------------------------------------------


class HostedWorker:
    """A worker forked by the host, as the pool drives a spawned one: its pipes as streams, its
    process id, and its end (read from its stdout closing: it is not this process's child, so its
    exit code is not known)."""

    def __init__(self, pid: int, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader) -> None:
        self.pid = pid
        self.stdin: asyncio.StreamWriter | None = stdin
        self.stdout: asyncio.StreamReader | None = stdout
        self.returncode: int | None = None

    async def wait(self) -> int | None:
        """Called once its stdout has ended: it has exited, or is about to."""
        self.returncode = -1
        return None


class HostClient:
    """A command's way to its host: start it when none runs, and ask it for workers."""

    def __init__(self, line_limit: int) -> None:
        self._line_limit = line_limit
        self._started: subprocess.Popen[bytes] | None = None
        self._served = False
        """Whether a host has forked a worker for this command."""
        self._gave_up = False
        self.waiting = 0
        """Workers asked for while the host still loads."""

    @property
    def usable(self) -> bool:
        return not self._gave_up and socket_path() is not None

    async def worker(self) -> HostedWorker | None:
        """A worker forked by the host, starting the host first when none runs (and waiting for it
        to load); None when there is no host to be had: the caller starts its own worker."""
        path = socket_path()
        if path is None or self._gave_up:
            return None
        deadline = time.monotonic() + START_TIMEOUT_S
        self.waiting += 1
        try:
            while True:
                try:
                    hosted = await self._ask(path)
                    self._served = True
                    return hosted
                except (FileNotFoundError, ConnectionRefusedError):
                    pass  # none runs, or it still loads
                except (OSError, ValueError, KeyError, TimeoutError):
                    self._gave_up = True  # a host that answers wrongly: this command does without
                    return None
                if not self._starting(path) or time.monotonic() > deadline:
                    self._gave_up = True
                    return None
                await asyncio.sleep(0.02)
        finally:
            self.waiting -= 1

    def abandon(self) -> None:
        """As the command ends: stop the host it started if that host has served it nothing yet
        (a command refused before its first call leaves no host behind)."""
        started = self._started
        if started is not None and not self._served and started.poll() is None:
            started.terminate()

    def _starting(self, path: Path) -> bool:
        """Whether a host is starting (this command starts one if none does)."""
        if self._started is None:
            self._started = _start_host(path)
            return self._started is not None
        return self._started.poll() is None or _host_pid(path) is not None

    async def _ask(self, path: Path) -> HostedWorker:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.setblocking(False)
            await loop.sock_connect(conn, str(path))
            worker_in, to_worker = os.pipe()
            from_worker, worker_out = os.pipe()
            try:
                socket.send_fds(conn, [b'{"worker": true}\n'], [worker_in, worker_out])
            finally:
                os.close(worker_in)
                os.close(worker_out)
            try:
                answer = await asyncio.wait_for(_read_line(loop, conn), ANSWER_TIMEOUT_S)
                pid = int(json.loads(answer)["pid"])
            except BaseException:
                os.close(to_worker)
                os.close(from_worker)
                raise
        return await _streams(loop, pid, to_worker, from_worker, self._line_limit)


async def _read_line(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await loop.sock_recv(conn, 4096)
        if not chunk:
            raise ConnectionRefusedError("the model host closed the connection")  # it is stopping
        data += chunk
    return data


async def _streams(
    loop: asyncio.AbstractEventLoop, pid: int, to_worker: int, from_worker: int, limit: int
) -> HostedWorker:
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(from_worker, "rb", 0)
    )
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop), os.fdopen(to_worker, "wb", 0)
    )
    return HostedWorker(pid, asyncio.StreamWriter(transport, protocol, None, loop), reader)


def _lock_path(path: Path) -> Path:
    return path.with_suffix(".lock")


def _host_pid(path: Path) -> int | None:
    """The process id of the host of ``path`` while it runs (it writes it in its lock file once
    it holds the lock, before it loads litellm); None when none runs."""
    try:
        pid = int(_lock_path(path).read_text().strip() or "0")
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return None  # a process of another user has that id by now
    return pid


def _start_host(path: Path) -> subprocess.Popen[bytes] | None:
    """Start a host for ``path`` in a session of its own (it outlives this command); None if it
    cannot be started."""
    idle = idle_seconds()
    if idle is None:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        log = open(path.with_suffix(".log"), "ab")  # noqa: SIM115 (the child keeps it)
    except OSError:
        return None
    with log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dispatch.hub.llm.model_host", str(path), str(idle)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            env=_host_environment(),
        )
    # reaped as soon as it ends (after its idle time, while a long command still runs)
    threading.Thread(target=process.wait, name="dispatch-model-host-reaper", daemon=True).start()
    return process


def stop_host() -> int | None:
    """Stop this installation's host; its process id, or None when none runs."""
    path = socket_path()
    if path is None:
        return None
    pid = _host_pid(path)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while _host_pid(path) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    return pid


# -- the host's side ---------------------------------------------------------------------------


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _serve_worker(listener: socket.socket, conn: socket.socket, fds: list[int]) -> None:
    """In the forked child: become a model worker on the command's pipes."""
    from dispatch.hub.llm.model_worker import main as worker_main

    listener.close()
    conn.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.dup2(fds[0], 0)
    os.dup2(fds[1], 1)
    for name in os.listdir("/proc/self/fd"):  # nothing of the host's: its lock above all, which
        if int(name) > 2:  # a worker outliving the host would hold, keeping a new host out
            with contextlib.suppress(OSError):
                os.close(int(name))
    code = 0
    try:
        worker_main()
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _handle(listener: socket.socket, conn: socket.socket) -> None:
    conn.settimeout(ANSWER_TIMEOUT_S)
    message, fds, _, _ = socket.recv_fds(conn, 4096, 2)
    try:
        if _peer_uid(conn) != os.getuid() or len(fds) != 2 or not message.startswith(b'{"worker": true}'):
            return
        pid = os.fork()
        if pid == 0:
            _serve_worker(listener, conn, fds)
        conn.sendall(b'{"pid": %d}\n' % pid)
    finally:
        for fd in fds:
            os.close(fd)


def serve(path: Path, idle_s: float) -> None:
    """Load litellm, then fork a worker for each command that asks until ``idle_s`` pass without one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = open(_lock_path(path), "a+b")  # noqa: SIM115 (held for the host's life)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another host for this installation runs, or is starting
    lock.truncate(0)
    lock.write(b"%d\n" % os.getpid())
    lock.flush()

    def stop(*_: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its workers are reaped as they end
    from dispatch.hub.heap import settle_heap
    from dispatch.hub.llm import model_worker
    from dispatch.hub.llm.litellm_call import load_litellm

    assert model_worker.main  # the worker's code loaded once, here, for every fork
    from dispatch.hub.llm.openai_body import send_chat_bodies_as_given

    load_litellm()
    send_chat_bodies_as_given()
    settle_heap()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_mask)
    ours = path.stat().st_ino
    try:
        listener.listen(64)
        listener.settimeout(min(CHECK_S, idle_s))
        print(f"model host {os.getpid()} ready on {path}", flush=True)
        _accept(listener, path, ours, idle_s)
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_ino == ours:
                path.unlink()
        lock.close()


def _accept(listener: socket.socket, path: Path, ours: int, idle_s: float) -> None:
    last = time.monotonic()
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            try:
                replaced = path.stat().st_ino != ours
            except FileNotFoundError:
                replaced = True
            if replaced or time.monotonic() - last > idle_s:
                return
            continue
        last = time.monotonic()
        with conn:
            try:
                _handle(listener, conn)
            except OSError as error:
                print(f"model host: a request failed: {error}", flush=True)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), float(sys.argv[2]))
