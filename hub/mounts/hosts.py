"""Tool hosts: an agent's ``fs``, ``shell`` and ``lsp`` servers in another process (with
``execution.engine: ray``, a Ray actor on a node Ray chooses), reached through MCP sessions whose
messages travel as the actor's method calls (no port of their own).

On the node, :class:`ToolHost` (the actor's body; it imports no Ray) builds those servers from the
agent's :class:`~dispatch.hub.mounts.plan.MountPlan` exactly as the hub would in its own process,
the sandbox included (it is chosen on the node, for the node), and serves each over memory
streams. What they send (JSON-RPC messages, and a path request outside the agent's grants) waits
in one outbox the hub takes from. On the hub, :class:`HostSession` is the other side: each mounted
server's MCP client reads and writes a pair of memory streams (:meth:`HostSession.transport`) that
it feeds from the outbox and drains into the actor; a path request goes to the user through the
agent's link, and the answer back to the node. When the actor dies (its node stopped), the calls
in flight and every later one raise :class:`ToolHostLost`, naming the node: the tree makes the
agent ``interrupted``, resumable on another node.

A node that does not share the project's files (found, not assumed: it must see the probe file the
hub wrote, :func:`sees_probe`), or any node when the template says ``placement: {files: copy}``,
works in a copy of its own: the hub packs the files (:class:`FileTravel`, git bundles through Ray's
object store), :meth:`ToolHost.checkout` unpacks them into a folder of the host's own, which is then
its servers' root, and :meth:`ToolHost.pack_back` sends the agent's work back when it ends, for the
hub to merge as an isolated child's is merged (:class:`Returned`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import anyio
import anyio.to_thread
import mcp_types
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client._transport import TransportStreams, WriteStream
from mcp.shared.memory import create_client_server_memory_streams
from mcp.shared.message import SessionMessage
from pydantic import BaseModel, ConfigDict

from dispatch.hub.errors import ToolServerError
from dispatch.hub.mounts.plan import MountPlan, build_targets
from dispatch.hub.views import PlacementView
from dispatch.servers._base import ServerPlan
from dispatch.servers.hublink import AccessDecision, HubLink, Operation
from dispatch.servers.lsp.manager import LspManager
from dispatch.servers.lsp.settings import LspSettings

HOSTED_KINDS = frozenset({"fs", "shell", "lsp"})
"""The servers a tool host runs; the others (inbox, summon, web, outside ones) stay on the hub."""

_T = TypeVar("_T")
Outgoing = tuple[str, str, str]
"""What a tool host hands the hub: ``("mcp", kind, json)`` or ``("ask", id, json)``."""


class ToolHostLost(ToolServerError):
    """The agent's tool host is gone (its node or process stopped): the agent is interrupted."""


@dataclass(frozen=True)
class Packed:
    """The project's files as they travel to a node: a bundle of one commit, ``base``, and where
    the project's root lies in it (``subdir``, "" at the top)."""

    bundle: bytes
    base: str
    subdir: str
    folders: tuple[str, ...] = ()
    """Folders of the agent's write scope, root-relative, that the node makes (git carries no empty folder)."""


class FileTravel(Protocol):
    """How the project's files travel to a node and an agent's work back
    (:class:`~dispatch.hub.changes.travel.GitTravel`); each method blocks."""

    def pack(self, root: Path) -> Packed:
        """On the hub: the files of the project at ``root`` as they are now."""
        ...

    def unpack(self, packed: Packed, folder: Path) -> Path:
        """On the node: the files checked out under ``folder``; the agent's root there."""
        ...

    def pack_back(self, folder: Path, base: str) -> bytes:
        """On the node: the agent's files under ``folder``, as a commit on ``base``, packed."""
        ...

    def receive(self, root: Path, bundle: bytes) -> str:
        """On the hub: the work packed back, added to the repository of ``root``; its commit."""
        ...


@dataclass(frozen=True)
class Returned:
    """An agent's work that came back from a copy of its project on a node: the commit it started
    from (``base``) and the commit of its files at its end (``child``, None when it could not come
    back: ``error`` says why), both in the repository of ``root``."""

    root: Path
    base: str
    child: str | None
    error: str = ""


def sees_probe(path: str, token: str) -> bool:
    """Whether this process sees the hub's probe file at ``path`` holding ``token``: its node
    shares the hub's files."""
    try:
        return Path(path).read_text() == token
    except (OSError, UnicodeDecodeError):
        return False


def _dump(message: SessionMessage) -> str:
    return message.message.model_dump_json(by_alias=True, exclude_unset=True)


def _load(raw: str) -> SessionMessage:
    return SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(raw, by_name=False))


class _AskAccess:
    """The node's side of the agent's link: a path request waits in the outbox for the user's answer."""

    def __init__(self, host: ToolHost) -> None:
        self._host = host

    async def request_access(self, path: str, operation: Operation, why: str) -> AccessDecision:
        return await self._host.ask(path, operation, why)


class ToolHost:
    """An agent's hosted servers on one node (the body of its Ray actor), built by :meth:`start`."""

    def __init__(self, plan: MountPlan, lsp: LspSettings | None) -> None:
        self._plan = plan
        self._lsp_settings = lsp
        self._servers: dict[str, ServerPlan] = {}
        self._inputs: dict[str, WriteStream[SessionMessage | Exception]] = {}
        self._asks: dict[str, tuple[anyio.Event, list[str]]] = {}
        self._outbox: MemoryObjectSendStream[Outgoing] | None = None
        self._taken: MemoryObjectReceiveStream[Outgoing] | None = None
        self._group: TaskGroup | None = None
        self._stopping: anyio.Event | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._count = 0
        self._copy: tuple[FileTravel, Path, str] | None = None
        """With a copy of the project: how it travels, the host's folder, and the commit it started from."""

    async def checkout(self, travel: FileTravel, packed: Packed) -> str:
        """Unpack the project's files into a folder of this host's own, the servers' root from
        :meth:`start` on; returns that root."""
        folder = Path(tempfile.mkdtemp(prefix="dispatch-files-"))
        self._copy = (travel, folder, packed.base)
        try:
            root = await anyio.to_thread.run_sync(travel.unpack, packed, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            self._copy = None
            raise
        self._plan = replace(self._plan, root=root)
        return str(root)

    async def pack_back(self) -> bytes:
        """The agent's files in this host's copy, packed for the hub."""
        assert self._copy is not None, "checkout() first"
        travel, folder, base = self._copy
        return await anyio.to_thread.run_sync(travel.pack_back, folder, base)

    async def start(self) -> None:
        """Build the servers (with a node's own language servers for ``lsp``), held by a task
        that outlives this call (an actor's calls are tasks of their own)."""
        self._outbox, self._taken = anyio.create_memory_object_stream[Outgoing](max_buffer_size=1024)
        self._stopping, ready, failed = anyio.Event(), anyio.Event(), list[BaseException]()
        self._keeper = asyncio.get_running_loop().create_task(self._keep(ready, failed))
        await ready.wait()
        if failed:
            raise failed[0]

    async def _keep(self, ready: anyio.Event, failed: list[BaseException]) -> None:
        assert self._stopping is not None
        try:
            async with AsyncExitStack() as stack:
                self._group = await stack.enter_async_context(anyio.create_task_group())
                plan = self._plan
                if self._lsp_settings is not None:
                    plan = replace(plan, lsp=await stack.enter_async_context(LspManager(self._lsp_settings)))
                link = cast(HubLink, _AskAccess(self))  # the fs and shell servers use only request_access
                targets = build_targets(plan, link)
                self._servers = {k: t for k, t in targets.items() if k in HOSTED_KINDS and isinstance(t, ServerPlan)}
                ready.set()
                await self._stopping.wait()
                self._group.cancel_scope.cancel()
        except Exception as error:
            failed.append(error)
        finally:
            ready.set()

    async def open(self, kind: str) -> None:
        """Serve ``kind`` over a fresh pair of memory streams (one session per kind)."""
        assert self._group is not None, "start() first"
        server = self._servers[kind].build()._lowlevel_server  # pyright: ignore[reportPrivateUsage]
        ready = anyio.Event()

        async def serve() -> None:
            async with create_client_server_memory_streams() as (client, served):
                (client_read, client_write), (server_read, server_write) = client, served
                self._inputs[kind] = client_write

                async def forward() -> None:
                    async for message in client_read:
                        if isinstance(message, SessionMessage) and self._outbox is not None:
                            await self._outbox.send(("mcp", kind, _dump(message)))

                async with anyio.create_task_group() as group:
                    group.start_soon(forward)
                    ready.set()
                    await server.run(server_read, server_write, server.create_initialization_options())
                    group.cancel_scope.cancel()

        self._group.start_soon(serve)
        await ready.wait()

    async def send(self, kind: str, raw: str) -> None:
        """A JSON-RPC message from the hub's client of ``kind``."""
        await self._inputs[kind].send(_load(raw))

    async def receive(self) -> list[Outgoing]:
        """What the servers sent since the last call (waits for at least one)."""
        assert self._taken is not None, "start() first"
        taken = [await self._taken.receive()]
        while True:
            try:
                taken.append(self._taken.receive_nowait())
            except anyio.WouldBlock:
                return taken

    async def ask(self, path: str, operation: Operation, why: str) -> AccessDecision:
        """A path request of a server: it waits for the hub to answer it (:meth:`answer`)."""
        assert self._outbox is not None
        self._count += 1
        ask_id = str(self._count)
        answered, answer = anyio.Event(), list[str]()
        self._asks[ask_id] = (answered, answer)
        request = AccessRequest(path=path, operation=operation, why=why)
        await self._outbox.send(("ask", ask_id, request.model_dump_json()))
        await answered.wait()
        del self._asks[ask_id]
        return AccessDecision.model_validate_json(answer[0])

    async def answer(self, ask_id: str, raw: str) -> None:
        answered, answer = self._asks[ask_id]
        answer.append(raw)
        answered.set()

    async def stop(self) -> None:
        for stream in self._inputs.values():
            await stream.aclose()
        if self._stopping is not None and self._keeper is not None:
            self._stopping.set()
            await self._keeper
        if self._copy is not None:
            shutil.rmtree(self._copy[1], ignore_errors=True)

    def cpu_seconds(self) -> float:
        """CPU time of this host and of the commands it ran (its children, once waited for)."""
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system


class AccessRequest(BaseModel):
    """A server's request for a path outside the agent's grants, on its way to the user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    operation: Operation
    why: str


Announce = Callable[[str, PlacementView, str | None], None]
"""Called when an agent's tool host starts (with where, lost None) or is lost (with why)."""


class HostEngine(Protocol):
    """Where tool hosts are placed (:class:`~dispatch.hub.mounts.cluster.RayEngine`)."""

    async def place(self, plan: MountPlan, lsp: LspSettings | None) -> tuple[Any, PlacementView]:
        """A started tool host (its actor handle) for ``plan``, and where it runs."""
        ...

    async def release(self, actor: Any) -> None:
        """Stop the tool host (its actor)."""
        ...

    def announce(self, agent_id: str, placement: PlacementView, lost: str | None) -> None:
        """Tell the watchers a tool host started (``lost`` None) or was lost (why)."""
        ...

    def watch(self, watcher: Announce) -> None:
        """Have ``watcher`` called at every :meth:`announce`."""
        ...

    def take_returned(self, agent_id: str) -> Returned | None:
        """The work of the agent's last tool host that worked in a copy, once (None: none came back)."""
        ...


@dataclass(frozen=True)
class HostedServer:
    """A mount served by the agent's tool host: ``local`` lists its tools without a round trip
    (the same code, built for the same plan)."""

    kind: str
    local: ServerPlan
    session: HostSession


class HostSession:
    """The hub's side of one agent's tool host, from :meth:`run` until its task is cancelled."""

    def __init__(self, engine: HostEngine, plan: MountPlan, link: HubLink) -> None:
        self._engine = engine
        self._plan = plan
        self._link = link
        self._actor: Any = None
        self.placement = PlacementView(engine="ray")
        self._inbound: dict[str, MemoryObjectSendStream[SessionMessage | Exception]] = {}
        self.lost = anyio.Event()
        self.reason = ""

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """Place and start the host, then carry what it sends until cancelled (the host is then stopped)."""
        node_plan = replace(self._plan, lsp=None, outside=None, hosts=None)  # what crosses to the node
        lsp = getattr(self._plan.lsp, "settings", None) if "lsp" in self._plan.kinds() else None
        try:
            self._actor, self.placement = await self._engine.place(node_plan, cast(LspSettings | None, lsp))
        except Exception as error:
            raise ToolServerError(f"the agent's tool host could not be placed: {error}") from error
        self._engine.announce(self._plan.agent_id, self.placement, None)
        task_status.started()
        try:
            async with anyio.create_task_group() as group:
                while True:
                    try:
                        batch: list[Outgoing] = await self._actor.receive.remote()
                    except Exception as error:  # the actor died: its node or its process stopped
                        self._lose(error)
                        return
                    for what, key, raw in batch:
                        if what == "mcp" and key in self._inbound:
                            await self._inbound[key].send(_load(raw))
                        elif what == "ask":
                            group.start_soon(self._answer, key, AccessRequest.model_validate_json(raw))
        finally:
            with anyio.CancelScope(shield=True):
                if not self.lost.is_set():
                    await self._engine.release(self._actor)
                for stream in self._inbound.values():
                    stream.close()

    def _lose(self, error: BaseException) -> None:
        where = self.placement
        node = f"Ray node {where.node_id} ({where.address})" if where.node_id else "its Ray node"
        detail = str(error).strip().splitlines()[0] if str(error).strip() else "the actor stopped"
        self.reason = f"its tool host on {node} was lost ({detail[:200]}); resume it to continue on another node"
        self.lost.set()
        self._engine.announce(self._plan.agent_id, self.placement, self.reason)

    async def _answer(self, ask_id: str, request: AccessRequest) -> None:
        decision = await self._link.request_access(request.path, request.operation, request.why)
        await self._call(self._actor.answer.remote(ask_id, decision.model_dump_json()))

    async def _call(self, ref: Awaitable[_T]) -> _T:
        """An actor call, or ToolHostLost naming the node when the actor is gone."""
        try:
            return await ref
        except Exception as error:
            if not self.lost.is_set():
                self._lose(error)
            raise ToolHostLost(self.reason) from None

    async def guard(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """``call()``, unless the host is lost first (or already): ToolHostLost, naming the node."""
        if self.lost.is_set():
            raise ToolHostLost(self.reason)
        result: list[_T] = []
        async with anyio.create_task_group() as group:

            async def run_call() -> None:
                result.append(await call())
                group.cancel_scope.cancel()

            async def watch() -> None:
                await self.lost.wait()
                group.cancel_scope.cancel()

            group.start_soon(run_call)
            group.start_soon(watch)
        if not result:
            raise ToolHostLost(self.reason)
        return result[0]

    @asynccontextmanager
    async def transport(self, kind: str) -> AsyncGenerator[TransportStreams]:
        """The MCP client's streams for ``kind``: what it writes goes to the actor, one call a message."""
        await self._call(self._actor.open.remote(kind))
        inbound_send, inbound = anyio.create_memory_object_stream[SessionMessage | Exception](max_buffer_size=256)
        outbound, outbound_read = anyio.create_memory_object_stream[SessionMessage](max_buffer_size=256)
        self._inbound[kind] = inbound_send

        async def drain() -> None:
            async for message in outbound_read:
                try:
                    await self._call(self._actor.send.remote(kind, _dump(message)))
                except ToolHostLost:
                    return

        async with anyio.create_task_group() as group, inbound, outbound:
            group.start_soon(drain)
            yield inbound, outbound
            group.cancel_scope.cancel()
