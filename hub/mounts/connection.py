"""The MCP client sessions of one agent's mounts, and their lifetime (:func:`open_mounts`).

When: an in-process server is mounted as its plan (:class:`~dispatch.servers._base.ServerPlan`:
its tools, bound to this agent, listed without building anything); the server is built on the
agent's first call to one of them (most agents never call most of their servers, and a spawn must
stay cheap: about a millisecond for all of them); an ``fs`` tool, and the ``inbox``'s
``check_messages``, are called on it without a session
(:meth:`~dispatch.servers._base.ServerPlan.call`, see :data:`SESSIONLESS_TOOLS`), the others open
its MCP session on their first call. A stdio server is started at once, all of them concurrently,
since its tools are known only from the server.

Outside MCP servers (the config's ``mcp_servers``, granted by name) come from the hub's pool
(:mod:`dispatch.hub.mounts.outside`): their results reach the model marked untrusted, and one
whose tool list changed since the user pinned it is left out, with a prompt note saying why. Tool
names are unique across an agent's mounts: a clash is refused, naming both servers (grant one of
them narrowed, e.g. ``github: [get_issue]``, to resolve it).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import cast

import anyio
from anyio.abc import TaskGroup, TaskStatus
from mcp import Client
from mcp_types import CallToolResult, Tool
from mcp_types.version import LATEST_MODERN_VERSION

from dispatch.hub.errors import ToolServerError, unwrap
from dispatch.hub.llm.types import JsonDict
from dispatch.hub.mounts.hooks import UserHooks
from dispatch.hub.mounts.hosts import HOSTED_KINDS, HostedServer, HostSession
from dispatch.hub.mounts.outside import list_tools, open_outside
from dispatch.hub.mounts.plan import MountPlan, ServerTarget, build_targets, prompt_notes
from dispatch.hub.mounts.toolset import Mounts, ToolGate, ToolOutput, ToolTrack
from dispatch.hub.policy.servers import UNTRUSTED_KINDS
from dispatch.servers._base import MCPServer, ServerPlan
from dispatch.servers.hublink import HubLink

SESSIONLESS_TOOLS: dict[str, frozenset[str] | None] = {"fs": None, "inbox": frozenset({"check_messages"})}
"""The in-process servers whose context-free tools are called without a session (None: all of them):
``fs``, whose tools only touch files; the ``inbox``'s ``check_messages``, which takes what waits and
waits for nothing (an agent's first call of it, often a message's way in, would otherwise wait for
the session to open: a few turns of a loop that hundreds of agents keep busy). The tools that wait
on other agents (``summon``'s, the ``inbox``'s ``ask_user``) keep their session: run in the agent's
own task, a child's budget stop cancelling its parent mid-``wait`` left the child's task cancelled
past its own cancel scope (an anyio cancellation the scope did not absorb), the child never marked
cancelled."""


def _sessionless(kind: str, name: str) -> bool:
    if kind not in SESSIONLESS_TOOLS:
        return False
    names = SESSIONLESS_TOOLS[kind]
    return names is None or name in names


class Connection:
    """One mounted server's MCP session, held open by a task of the mounts' task group (so any of
    the agent's tasks may open it) from :meth:`open` until :meth:`close`."""

    def __init__(self, kind: str, target: ServerTarget | HostedServer, group: TaskGroup) -> None:
        self.kind = kind
        self._target = target
        self._group = group
        self._lock = anyio.Lock()
        self._client: Client | None = None
        self._server: MCPServer | None = None
        """Dispatch's own server, built for calls without a session (:meth:`ServerPlan.call`)."""
        self._broken: BaseException | None = None
        self._closed = anyio.Event()

    async def open(self) -> Client:
        """The session, opened on the first call; a server that cannot start is a ToolServerError."""
        if self._client is not None and self._broken is None:
            return self._client  # open: no lock to take (taking one is a turn of the loop)
        async with self._lock:
            if self._broken is not None:
                raise ToolServerError(f"the {self.kind} tool server stopped: {self._broken}")
            client = self._client
            if client is None:
                try:
                    client = self._client = await self._group.start(self._hold)
                except Exception as error:  # the server's own failure, named for the agent
                    raise ToolServerError(f"the {self.kind} tool server failed to start: {error}") from error
            return client

    async def call_tool(self, name: str, arguments: JsonDict, output: ToolOutput | None = None) -> CallToolResult:
        """The call; with ``output``, the server's progress messages while it runs go there."""
        if isinstance(self._target, HostedServer):  # a lost host fails the call (ToolHostLost), never hangs it
            return await self._target.session.guard(lambda: self._call(name, arguments, output))
        return await self._call(name, arguments, output)

    async def _call(self, name: str, arguments: JsonDict, output: ToolOutput | None) -> CallToolResult:
        target = self._target
        if isinstance(target, ServerPlan) and _sessionless(self.kind, name) and target.calls_without_session(name):
            if self._server is None:
                self._server = target.build()
            return await target.call(self._server, name, arguments)
        if output is None:
            return await (await self.open()).call_tool(name, arguments)

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            if message:
                output(message)

        return await (await self.open()).call_tool(name, arguments, progress_callback=progress)

    async def list_tools(self) -> list[Tool]:
        return await list_tools(await self.open())

    def close(self) -> None:
        self._closed.set()

    async def _hold(self, *, task_status: TaskStatus[Client]) -> None:
        started = False
        try:
            if isinstance(self._target, ServerPlan):
                # Dispatch's own server, in this process: it speaks the SDK's newest protocol, so the
                # session adopts it at once rather than probing for it (a round trip on a busy loop).
                client = Client(self._target.build(), mode=LATEST_MODERN_VERSION)
            elif isinstance(self._target, HostedServer):  # on the agent's tool host, through its actor
                client = Client(self._target.session.transport(self.kind), mode="legacy")
            else:
                client = Client(self._target)
            async with client:
                task_status.started(client)
                started = True
                await self._closed.wait()
        except Exception as error:
            if not started:
                raise
            self._broken = error  # a later call reports it; the agent's other work goes on


async def _hold_host(session: HostSession, scope: anyio.CancelScope, *, task_status: TaskStatus[None]) -> None:
    """Run the agent's tool host until ``scope`` is cancelled (when its mounts close)."""
    with scope:
        await session.run(task_status=task_status)


async def _listed(kind: str, target: ServerTarget | HostedServer, connection: Connection) -> list[Tool]:
    """A server's tools: read from the server itself in-process (or its plan, for a hosted one),
    over its session otherwise."""
    if isinstance(target, ServerPlan):
        return target.listed()
    if isinstance(target, HostedServer):
        return target.local.listed()
    try:
        return await connection.list_tools()
    except ToolServerError:
        raise
    except Exception as error:
        raise ToolServerError(f"the {kind} tool server failed to list its tools: {error}") from error


@asynccontextmanager
async def open_mounts(
    plan: MountPlan,
    link: HubLink,
    gate: ToolGate | None = None,
    track: ToolTrack | None = None,
    hooks: UserHooks | None = None,
) -> AsyncGenerator[Mounts]:
    """Mount every server of ``plan`` (in-process ones connect on first use); disconnect (and stop
    stdio servers) on exit. ``hooks``: the config's, run around each tool call."""
    targets: dict[str, ServerTarget | HostedServer] = {**build_targets(plan, link)}
    body_error: BaseException | None = None  # raised after the group, so the group does not wrap it
    hosting = anyio.CancelScope()
    async with anyio.create_task_group() as group:
        hosted = [k for k, t in targets.items() if k in HOSTED_KINDS and isinstance(t, ServerPlan)]
        if plan.hosts is not None and hosted:
            session = HostSession(plan.hosts, plan, link)
            await group.start(_hold_host, session, hosting)
            targets |= {k: HostedServer(k, cast(ServerPlan, targets[k]), session) for k in hosted}
        connections = {kind: Connection(kind, target, group) for kind, target in targets.items()}
        try:
            tools: dict[str, list[Tool]] = {}

            async def list_one(kind: str) -> None:
                tools[kind] = await _listed(kind, targets[kind], connections[kind])

            try:
                async with anyio.create_task_group() as listing:
                    for kind in targets:
                        listing.start_soon(list_one, kind)
            except BaseExceptionGroup as group_error:
                raise unwrap(group_error) from None
            ordered = {kind: tools[kind] for kind in targets}
            callers = {kind: connection.call_tool for kind, connection in connections.items()}
            async with open_outside(plan.outside, plan.grants, plan.agent_id) as outside:  # outside data: untrusted
                untrusted = UNTRUSTED_KINDS | outside.kinds
                mounts = Mounts(
                    callers | outside.callers, ordered | outside.tools, plan.grants.tools, gate, untrusted, track, hooks
                )
                mounts.notes = prompt_notes(plan) + outside.notes
                try:
                    yield mounts
                except BaseException as error:  # re-raised below, once the sessions are closed
                    body_error = error
        finally:
            for connection in connections.values():
                connection.close()
            hosting.cancel()
    if body_error is not None:
        raise body_error
