"""``dispatch serve``: the hub of one project over HTTP and WebSocket, until a signal stops it.

It opens the hub (:meth:`Hub.open` takes the data directory's lock: a second hub there is
refused, naming the running one's pid and address), loads or makes the token, listens, writes its
address into the lock file for other commands, prints the URL that carries the token, and serves
the API (:func:`dispatch.hub.api.app.create_app`) with uvicorn, on a loop that runs the API's callbacks
before the agents' (:mod:`dispatch.hub.loop`). SIGINT or SIGTERM stops it gracefully
(:func:`dispatch.hub.service.lifecycle.serve_until_signalled`): no new work, running steps may finish up to
the deadline, the rest is ``interrupted``, everything committed, exit 0; a second signal exits at
once. uvicorn's own signal handling is off, so those handlers see the signals.

Only loopback addresses are served unless ``allow_remote`` is given: then the host named is added
to the hosts the API accepts in ``Host`` headers (for a wildcard address, this machine's names).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import uvicorn
from mcp.server.transport_security import TransportSecuritySettings

from dispatch.hub.api.app import create_app
from dispatch.hub.api.auth import LOOPBACK_HOSTS, load_or_create_token
from dispatch.hub.errors import UserError, unwrap
from dispatch.hub.heap import settle_heap
from dispatch.hub.llm.client import model_calls_on_this_loop
from dispatch.hub.llm.types import ModelClient
from dispatch.hub.loop import ApiFirstLoop, serving_api
from dispatch.hub.mcp.tools import build_server as mcp_endpoint
from dispatch.hub.service.hub import Hub
from dispatch.hub.service.lifecycle import (
    DEFAULT_DEADLINE_S,
    prepare_data_dir,
    resolved,
    running_hub,
    serve_until_signalled,
)

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8421
EXIT_USAGE = 2
WILDCARDS = ("0.0.0.0", "::", "")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers (it would re-raise the signal after its shutdown)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None]:
        yield


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> tuple[str, ...]:
    """The names a ``Host`` header may carry: loopback, plus the host served on (and, for a
    wildcard address, this machine's names)."""
    extra = [host.strip("[]")]
    if host in WILDCARDS:
        extra = [socket.gethostname(), socket.getfqdn()]
    return tuple(dict.fromkeys([*LOOPBACK_HOSTS, *(h.lower() for h in extra if h)]))


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto
    # says TCP, and with Nagle on, every response body waited ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


def _address(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in WILDCARDS else host.strip("[]")
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def _say(text: str) -> None:
    print(f"dispatch: {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Serving:
    """What one ``serve`` serves, and how."""

    root: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    deadline_s: float = DEFAULT_DEADLINE_S
    model: str | None = None
    """The tag or model name of new chats (the config's default when None)."""
    data_dir: Path | None = None
    """The hub's data directory (``$DISPATCH_HOME`` or its default when None)."""
    client: ModelClient | None = None
    """The model client (the config's key router when None; the demo's scripted model)."""
    alongside: Callable[[Hub], Coroutine[Any, Any, None]] | None = None
    """Run with the server once it listens (the demo's session)."""

    @property
    def remote(self) -> bool:
        return not is_loopback(self.host)


async def _serve(serving: Serving) -> int:
    try:  # before the hub opens: a port in use changes nothing in the data directory
        sock = _listen(serving.host, serving.port)
    except OSError as error:
        _say(
            f"error: cannot listen on {serving.host}:{serving.port}: {error.strerror or error}; "
            "choose another port with --port (--port 0: any free one)"
        )
        return EXIT_USAGE
    async with model_calls_on_this_loop():  # this loop lasts as long as the command
        with sock:
            return await _serve_on(sock, serving)


async def _serve_on(sock: socket.socket, serving: Serving) -> int:
    host, remote = serving.host, serving.remote
    async with Hub.open(serving.root, serving.data_dir, default_model=serving.model, model=serving.client) as hub:
        token = load_or_create_token(hub.data_dir)
        address = _address(host, sock.getsockname()[1])
        hub.advertise(address)
        mcp = mcp_endpoint(hub)
        app = create_app(
            hub,
            token=token,
            allowed_hosts=allowed_hosts(host) if remote else LOOPBACK_HOSTS,
            extra_routes=mcp.streamable_http_app(
                # HubGuard checks token, Host and Origin for every path, /mcp included.
                transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False)
            ).routes,
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=5,
            ws_per_message_deflate=False,  # events are small: compressing each cost more than it saved
        )
        server = _Server(config)
        settle_heap()
        print(f"{address}/?token={token}", flush=True)
        _say(f"hub of {hub.root} serving at {address} (data: {hub.data_dir}); Ctrl-C stops it")
        if hub.interrupted_on_open:
            _say(f"{len(hub.interrupted_on_open)} agents were interrupted by the last stop; resume them with the API")
        if remote:
            _say(f"warning: listening beyond this machine on {host}; the token travels unencrypted over plain HTTP")

        def stop_serving() -> None:
            server.should_exit = True

        async def serve() -> None:
            async with mcp.session_manager.run(), anyio.create_task_group() as alongside:
                if serving.alongside is not None:
                    alongside.start_soon(serving.alongside, hub)
                with serving_api():  # its connections' callbacks run before the agents' (dispatch.hub.loop)
                    await server.serve(sockets=[sock])
                alongside.cancel_scope.cancel()

        return await serve_until_signalled(hub, serve=serve, stop_serving=stop_serving, deadline_s=serving.deadline_s)


def _already_serving(root: Path) -> int | None:
    """When a hub already serves on this data directory: have it serve ``root`` too, print its URL
    (with the token) and return the exit code; None when no hub serves here."""
    home = prepare_data_dir(None)
    info = running_hub(home)
    if info is None or info.address is None:
        return None
    token = load_or_create_token(home)
    print(f"{info.address}/?token={token}", flush=True)
    if info.root is not None and Path(info.root) != resolved(root):
        try:
            answer = httpx.post(
                f"{info.address}/api/projects",
                json={"root": str(resolved(root))},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
        except httpx.HTTPError as error:
            _say(f"error: the hub above (pid {info.pid}) did not answer: {error}")
            return EXIT_USAGE
        if answer.status_code != 200:
            _say(f"error: the hub above (pid {info.pid}) refused {resolved(root)}: {_detail(answer)}")
            return EXIT_USAGE
        _say(f"a hub already runs here (pid {info.pid}); it serves {resolved(root)} too now: pick it for a new chat")
        return 0
    _say(f"a hub already serves here (pid {info.pid}); its address is above")
    return 0


def _detail(answer: httpx.Response) -> str:
    try:
        return str(answer.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {answer.status_code}"


def serve(
    root: Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    allow_remote: bool = False,
    deadline_s: float = DEFAULT_DEADLINE_S,
    model: str | None = None,
) -> int:
    """Serve the hub of ``root`` until a signal; the exit code (0 after a graceful stop). ``model``:
    the tag or model name of new chats (the config's default when None)."""
    if not is_loopback(host) and not allow_remote:
        _say(f"error: --host {host} is not a loopback address; add --allow-remote to serve beyond this machine")
        return EXIT_USAGE
    already = _already_serving(root)
    if already is not None:
        return already
    return serve_with(Serving(root, host, port, deadline_s, model))


def serve_with(serving: Serving) -> int:
    """Serve until a signal: the exit code (0 after a graceful stop, 2 for what the user must fix)."""
    try:
        return anyio.run(_serve, serving, backend_options={"loop_factory": ApiFirstLoop})
    except Exception as raised:
        error = unwrap(raised)
        if isinstance(error, UserError):
            _say(f"error: {error}")
            return EXIT_USAGE
        raise
