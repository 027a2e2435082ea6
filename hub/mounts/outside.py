"""The hub's outside MCP servers (config ``mcp_servers``): connected on first use, shared, pinned.

Its room: the connections to servers Dispatch does not ship. The pool is one per agent tree (the
tree opens it when it starts and closes it when it stops). A server is started (stdio) or connected
(streamable HTTP) on the first mount that needs it; that one ``mcp.Client`` then serves every agent
of the hub until the tree stops (the SDK's client takes concurrent calls from many tasks). A server
with ``per_agent: true`` gets a connection per agent instead, closed with the agent's mounts. A
stdio server gets the hub's environment without credentials, like every process Dispatch starts
(:func:`~dispatch.servers.sandbox.policy.scrub_environment`), plus the ``env`` its config gives it.

Shared connections live in the pool's own task group, so they outlive the agent that opened them
and are closed by the task that opened them (anyio's rule). A shared connection that breaks is
dropped; the next mount reconnects. A server that cannot start fails the mount with an error
naming the server and its command or URL (never its env or headers). A tool call that takes longer
than the server's ``timeout_s`` is cancelled, and the agent reads a tool error saying so.

Before an agent sees a server's tools, the pins (:mod:`dispatch.hub.mounts.pins`) check the list
against the one the user trusts; a changed list is not mounted and the agent's prompt says why.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import httpx2
from anyio.abc import TaskGroup, TaskStatus
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, TextContent, Tool

from dispatch.hub.config.outside import McpServerConfig
from dispatch.hub.errors import ToolServerError, unwrap
from dispatch.hub.mounts.pins import ToolPins
from dispatch.hub.mounts.toolset import ToolCaller, ToolOutput
from dispatch.hub.policy.grants import Grants
from dispatch.hub.policy.outside_grants import ALL
from dispatch.hub.views import ToolInfo, ToolServerView
from dispatch.servers.sandbox.policy import scrub_environment

__all__ = [
    "OutsideMount",
    "OutsideServers",
    "OutsideSet",
    "granted_servers",
    "list_tools",
    "open_client",
    "open_outside",
]

log = logging.getLogger(__name__)
Caller = Callable[[str, dict[str, Any]], Awaitable[CallToolResult]]
START_TIMEOUT_S = 60.0
"""How long a server may take to start and list its tools before the mount fails."""


@dataclass(frozen=True)
class OutsideMount:
    """One outside server as one agent gets it: the client and its tools, or a note saying why not."""

    name: str
    client: Client | None
    tools: list[Tool]
    note: str | None = None


@asynccontextmanager
async def open_client(config: McpServerConfig) -> AsyncGenerator[Client]:
    """A connected client of the server ``config`` describes (its process stops on exit)."""
    if config.command is not None:
        env = scrub_environment(os.environ) | (config.env or {})
        params = StdioServerParameters(command=config.command, args=config.args, env=env, cwd=config.cwd)
        async with Client(params) as client:
            yield client
        return
    from mcp.client.streamable_http import streamable_http_client

    assert config.url is not None
    timeout = httpx2.Timeout(30, read=3600)
    async with (
        httpx2.AsyncClient(headers=config.headers, timeout=timeout) as http,
        Client(streamable_http_client(config.url, http_client=http)) as client,
    ):
        yield client


async def list_tools(client: Client) -> list[Tool]:
    """Every tool the server offers, through all pages."""
    page = await client.list_tools()
    tools = list(page.tools)
    while page.next_cursor:
        page = await client.list_tools(cursor=page.next_cursor)
        tools += page.tools
    return tools


def _failure(name: str, config: McpServerConfig, error: BaseException) -> ToolServerError:
    inner = unwrap(error)
    why = str(inner) or type(inner).__name__
    if isinstance(inner, TimeoutError):
        why = f"it did not answer within {START_TIMEOUT_S:g}s"
    return ToolServerError(
        f"the outside MCP server {name!r} ({config.transport}: {config.address()}) failed to start: {why}"
    )


class OutsideServers:
    """The outside MCP servers of one tree: ``servers`` from the config, ``pins`` from the hub
    (None: lists are not pinned, every state is ``unpinned``; trees without a store)."""

    def __init__(self, servers: Mapping[str, McpServerConfig] | None = None, pins: ToolPins | None = None) -> None:
        self.servers = dict(servers or {})
        self.pins = pins
        self._group: TaskGroup | None = None
        self._shared: dict[str, tuple[Client, list[Tool]]] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._seen: dict[str, list[Tool]] = {}
        self._failed: set[str] = set()

    async def __aenter__(self) -> OutsideServers:
        self._group = await anyio.create_task_group().__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        """Close every shared connection (stopping its process)."""
        group, self._group = self._group, None
        if group is None:
            return None
        group.cancel_scope.cancel()
        self._shared.clear()
        return await group.__aexit__(kind, error, tb)

    # ---- mounting ------------------------------------------------------------------------------

    @asynccontextmanager
    async def mount(self, name: str, agent_id: str) -> AsyncGenerator[OutsideMount]:
        """Server ``name`` for agent ``agent_id``: its client and tools (pins permitting) until exit.
        Raises ToolServerError when it is not configured or cannot start."""
        config = self.servers.get(name)
        if config is None:
            known = ", ".join(sorted(self.servers)) or "none are configured"
            raise ToolServerError(
                f"the grants name the outside MCP server {name!r}, which no config file defines under "
                f"mcp_servers ({known})"
            )
        if not config.per_agent:
            client, tools = await self._connection(name, config)
            yield await self._checked(name, client, tools, agent_id)
            return
        async with anyio.create_task_group() as group:  # this agent's own connection
            client, tools = await self._start(group, name, config, shared=False)
            try:
                yield await self._checked(name, client, tools, agent_id)
            finally:
                group.cancel_scope.cancel()

    async def _checked(self, name: str, client: Client, tools: list[Tool], agent_id: str) -> OutsideMount:
        if self.pins is None:
            return OutsideMount(name, client, tools)
        verdict = await self.pins.review(name, tools, agent_id)
        if verdict.note is not None:
            return OutsideMount(name, None, [], verdict.note)
        return OutsideMount(name, client, tools)

    async def _connection(self, name: str, config: McpServerConfig) -> tuple[Client, list[Tool]]:
        """The hub-wide connection to ``name``, opened now if it is not open yet."""
        async with self._locks.setdefault(name, anyio.Lock()):
            shared = self._shared.get(name)
            if shared is not None:
                return shared
            if self._group is None:
                raise RuntimeError("the outside servers are not open; enter the pool (the tree does) first")
            shared = self._shared[name] = await self._start(self._group, name, config, shared=True)
            return shared

    async def _start(
        self, group: TaskGroup, name: str, config: McpServerConfig, *, shared: bool
    ) -> tuple[Client, list[Tool]]:
        try:
            client, tools = await group.start(self._serve, name, config, shared)
        except Exception as error:
            self._failed.add(name)
            raise _failure(name, config, error) from error
        self._seen[name] = tools
        self._failed.discard(name)
        return client, tools

    async def _serve(
        self, name: str, config: McpServerConfig, shared: bool, *, task_status: TaskStatus[tuple[Client, list[Tool]]]
    ) -> None:
        """Hold one connection open until its group is cancelled (or the connection breaks)."""
        client: Client | None = None
        started = False
        try:
            with anyio.fail_after(START_TIMEOUT_S) as deadline:
                async with open_client(config) as client:
                    tools = await list_tools(client)
                    deadline.deadline = math.inf
                    task_status.started((client, tools))
                    started = True
                    await anyio.sleep_forever()
        except Exception as error:
            if not started:
                raise
            log.warning("outside MCP server %s: its connection broke (%s); the next use reconnects", name, error)
        finally:
            current = self._shared.get(name)
            if shared and current is not None and current[0] is client:
                del self._shared[name]

    # ---- what the user sees ----------------------------------------------------------------------

    async def views(self) -> list[ToolServerView]:
        """Every configured server: transport, state, tools, pending approval (starts nothing)."""
        views: list[ToolServerView] = []
        for name, config in self.servers.items():
            seen = [ToolInfo(name=t.name, description=t.description or "") for t in self._seen.get(name, [])]
            view = ToolServerView(name=name, transport=config.transport, state="unpinned", tools=seen, approval_id=None)
            if name in self._failed:
                view.state = "failed"
            elif self.pins is not None:
                view.state, view.approval_id = await self.pins.state(name)
                if name not in self._seen:
                    pinned = await self.pins.pinned(name) or []
                    view.tools = [ToolInfo(name=e["name"], description=e["description"]) for e in pinned]
            views.append(view)
        return views


@dataclass(frozen=True)
class OutsideSet:
    """The outside servers one agent mounts: a caller and the tools of each, and the prompt notes
    for those held back (a changed tool list)."""

    callers: dict[str, ToolCaller] = field(default_factory=dict[str, ToolCaller])
    tools: dict[str, list[Tool]] = field(default_factory=dict[str, list[Tool]])
    notes: tuple[str, ...] = ()

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.tools)


def _timed(server: str, timeout_s: float, caller: Caller) -> ToolCaller:
    """``caller`` whose calls are cancelled after ``timeout_s`` (the SDK tells the server so), the
    agent getting a tool error that names the server, the tool and the limit. What an outside
    server reports while a call runs is not its output: it is not passed on."""

    async def call(tool: str, arguments: dict[str, Any], output: ToolOutput | None = None, /) -> CallToolResult:
        with anyio.move_on_after(timeout_s):
            return await caller(tool, arguments)
        text = (
            f"the outside MCP server {server!r} did not answer {tool} within {timeout_s:g} s "
            f"(mcp_servers.{server}.timeout_s); the call was cancelled"
        )
        return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)

    return call


def granted_servers(pool: OutsideServers, grants: Grants) -> list[str]:
    """The outside servers ``grants`` mount: every configured one for ``"all"``, else those named
    (a name the config lacks too: mounting it says so), less those narrowed to no tools."""
    names = list(pool.servers) if grants.mcp_servers == ALL else list(grants.mcp_servers)
    return [name for name in names if grants.serves(name)]


@asynccontextmanager
async def open_outside(pool: OutsideServers | None, grants: Grants, agent_id: str) -> AsyncGenerator[OutsideSet]:
    """Mount the outside servers ``grants`` give agent ``agent_id``, one after another (a shared
    one is connected once per hub); per-agent connections close on exit."""
    if pool is None or not grants.mcp_servers:
        yield OutsideSet()
        return
    async with AsyncExitStack() as stack:
        found = OutsideSet()
        notes: list[str] = []
        for name in granted_servers(pool, grants):
            mounted = await stack.enter_async_context(pool.mount(name, agent_id))
            if mounted.client is None:
                notes += [mounted.note] if mounted.note else []
                continue
            found.callers[name] = _timed(name, pool.servers[name].timeout_s, mounted.client.call_tool)
            found.tools[name] = mounted.tools
        yield OutsideSet(found.callers, found.tools, tuple(notes))
