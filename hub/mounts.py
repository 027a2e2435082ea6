"""Mounts: the tool servers one agent gets, built from its grants and connected as MCP clients.

Which servers: ``inbox`` and ``fs`` always (``fs`` read-only unless the agent has a write scope),
``shell`` with the shell grant, ``summon`` with the summon grant and depth left, ``lsp`` with the
lsp grant when the hub runs language servers (always in-process: they are shared), ``web`` with the
web grant (its hosts and ``web_private`` make its policy; the config's ``web.search`` its search
provider); the grants'
per-server allow-lists narrow each to some of its tools (an empty list: not mounted). How: in-process
(``mcp.Client(server)`` on a server built for this agent's scope, no subprocess) by default, or
over stdio when the spec asks for process isolation; both run the same server code. ``inbox`` and
``summon`` are the agent's link to the hub, so they always run in-process.

When: an in-process server is mounted as its plan (:class:`~dispatch.servers._base.ServerPlan`:
its tools, bound to this agent, listed without building anything); the server is built and its MCP
session opened on the agent's first call to one of them (most agents never call most of their
servers, and a spawn must stay cheap: about a millisecond for all of them). A stdio server is started at once, all of
them concurrently, since its tools are known only from the server. One session is opened ahead of
its first call: the ``inbox``'s, as soon as a message waits for the agent (it reads the message
through ``check_messages``, which then waits for nothing; an agent nobody writes to never opens it).

Outside MCP servers (the config's ``mcp_servers``, granted by name) come from the hub's pool
(:mod:`dispatch.hub.outside_servers`): their results reach the model marked untrusted, and one
whose tool list changed since the user pinned it is left out, with a prompt note saying why. Tool
names are unique across an agent's mounts: a clash is refused, naming both servers (grant one of
them narrowed, e.g. ``github: [get_issue]``, to resolve it).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
from anyio.abc import TaskGroup, TaskStatus
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, TextContent, Tool
from mcp_types.version import LATEST_MODERN_VERSION

from dispatch.hub.errors import ToolServerError, unwrap
from dispatch.hub.grants import ROOT, Grants
from dispatch.hub.outside_servers import OutsideServers, list_tools, open_outside
from dispatch.hub.untrusted import mark_untrusted
from dispatch.servers import fs, inbox, lsp, shell, summon, web
from dispatch.servers._base import ServerPlan
from dispatch.servers.hublink import HubLink
from dispatch.servers.lsp import LspBackend
from dispatch.servers.sandbox import SandboxSetting, ShellMode, choose_shell_mode
from dispatch.servers.web_policy import WebPolicy
from dispatch.servers.web_search import SearchConfig

JsonDict = dict[str, Any]
ServerTarget = ServerPlan | StdioServerParameters
"""An in-process server, built on its first call, or the command that starts a stdio one."""
ToolGate = Callable[[str, str, JsonDict], Awaitable[str | None]]
"""``gate(kind, name, arguments)`` before a tool call: None to run it, or the refusal the model reads
instead (the hub's checkpoints, :mod:`dispatch.hub.approvals`); it may wait for the user."""
UNTRUSTED_KINDS: frozenset[str] = frozenset({"web"})
"""Servers whose results are outside data: :class:`Mounts` marks them with
:func:`~dispatch.hub.untrusted.mark_untrusted` before the model reads them."""
ToolCaller = Callable[[str, JsonDict], Awaitable[CallToolResult]]
"""``call(name, arguments)`` on one server: an MCP client's ``call_tool``, or one connected on demand."""


@dataclass(frozen=True)
class ToolOutcome:
    """A tool's result as the model will read it."""

    text: str
    is_error: bool


@dataclass(frozen=True)
class MountPlan:
    """What to mount for one agent: the grants, where, and how."""

    root: Path
    grants: Grants
    detached: bool = False
    isolated: bool = False
    lsp: LspBackend | None = None
    """The hub's language servers; None: no ``lsp`` mount, whatever the grants say."""
    sandbox: SandboxSetting = "auto"
    """The config's ``sandbox``: how the shell runs (see :func:`shell_mode`)."""
    web_search: SearchConfig | None = None
    """The config's ``web.search``: the provider of the web server's ``search`` tool; None: not configured."""
    outside: OutsideServers | None = None
    """The hub's outside MCP servers (config ``mcp_servers``, :mod:`dispatch.hub.outside_servers`); None: none."""
    agent_id: str = ""
    """Whose mounts these are (an outside server's changed tool list is asked about in its name)."""

    def kinds(self) -> list[str]:
        kinds = [kind for kind in ("inbox", "fs", "shell") if self.grants.serves(kind)]
        if self.grants.serves("summon") and self.grants.max_depth != 0:
            kinds.append("summon")
        if self.grants.serves("lsp") and self.lsp is not None:
            kinds.append("lsp")
        if self.grants.serves("web"):
            kinds.append("web")
        return kinds

    def write_paths(self) -> list[Path]:
        return [self.root if p == ROOT else self.root / p for p in self.grants.write]


def _module_params(module: str, args: list[str]) -> StdioServerParameters:
    env = shell.clean_environment(os.environ)
    return StdioServerParameters(command=sys.executable, args=["-m", module, *args], env=env)


def _fs_target(plan: MountPlan, link: HubLink) -> ServerTarget:
    if not plan.isolated:
        return fs.plan_server(plan.root, plan.write_paths(), ask=link.request_access)
    args = ["--root", str(plan.root)]
    if not plan.grants.write:
        args.append("--read-only")
    elif ROOT not in plan.grants.write:
        for path in plan.grants.write:
            args += ["--write", path]
    return _module_params("dispatch.servers.fs", args)


def shell_mode(plan: MountPlan) -> ShellMode:
    """How this agent's shell runs: sandboxed to its scope, disabled, or approved command by command."""
    return choose_shell_mode(plan.root, plan.write_paths(), plan.sandbox)


def _shell_target(plan: MountPlan, link: HubLink) -> ServerTarget:
    if not plan.isolated:
        mode = shell_mode(plan)
        return shell.plan_server(
            plan.root,
            launcher=mode.sandbox,
            ask=link.request_access,
            confirm_each=mode.confirm_each,
            refusal=mode.refusal,
        )
    args = ["--root", str(plan.root), "--sandbox", plan.sandbox]
    if not plan.grants.write:
        args.append("--read-only")
    elif ROOT not in plan.grants.write:
        args += ["--write", *plan.grants.write]
    return _module_params("dispatch.servers.shell", args)


def _web_target(plan: MountPlan) -> ServerTarget:
    policy = WebPolicy.from_grants(plan.grants.web, plan.grants.web_private)
    if not plan.isolated:
        return web.plan_server(policy, plan.web_search)
    args = [arg for host in policy.hosts or () for arg in ("--host", host)]
    if policy.private is True:
        args.append("--allow-private")
    else:
        args += [arg for net in policy.private or () for arg in ("--private", net)]
    search = plan.web_search
    if search is None:
        return _module_params("dispatch.servers.web", args)
    args += ["--search-provider", search.provider, "--search-max-results", str(search.max_results)]
    args += ["--search-base-url", search.base_url] if search.base_url else []
    params = _module_params("dispatch.servers.web", args)
    key = {web.SEARCH_KEY_ENV: search.api_key.get_secret_value()}  # not on the command line, where ps shows it
    return params.model_copy(update={"env": {**(params.env or {}), **key}})


def prompt_notes(plan: MountPlan) -> tuple[str, ...]:
    """What the agent's system prompt says about its mounts (the shell's sandbox, or its absence)."""
    return (shell_mode(plan).note,) if "shell" in plan.kinds() else ()


def build_targets(plan: MountPlan, link: HubLink) -> dict[str, ServerTarget]:
    """The server (or the command that starts it) for each mount of the plan."""
    targets: dict[str, ServerTarget] = {}
    for kind in plan.kinds():
        if kind == "inbox":
            targets[kind] = inbox.plan_server(link, detached=plan.detached)
        elif kind == "summon":
            targets[kind] = summon.plan_server(link)
        elif kind == "fs":
            targets[kind] = _fs_target(plan, link)
        elif kind == "shell":
            targets[kind] = _shell_target(plan, link)
        elif kind == "lsp" and plan.lsp is not None:
            targets[kind] = lsp.plan_server(plan.root, plan.lsp)
        elif kind == "web":
            targets[kind] = _web_target(plan)
    return targets


def openai_tool(tool: Tool) -> JsonDict:
    """An MCP tool in the OpenAI function-calling shape litellm takes."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description or "",
            "parameters": tool.input_schema,
        },
    }


def result_text(result: CallToolResult) -> str:
    parts = [c.text if isinstance(c, TextContent) else f"[{c.type} content]" for c in result.content]
    return "\n".join(parts) if parts else "(no output)"


class Mounts:
    """An agent's connected tool servers: their tools for the model, and calls routed by name.

    ``allow`` narrows a server to some of its tools (the grants' per-server allow-lists): the
    others are left out of the schemas the model sees, and a call to one is refused here, in the
    hub, without reaching the server. ``gate`` (the hub's checkpoints) sees every call first and
    may hold it for the user's approval or refuse it. Results of the ``untrusted`` kinds (errors
    too) reach the model marked as outside data, terminal controls stripped.
    """

    notes: tuple[str, ...] = ()
    """Lines for the agent's system prompt about these mounts (set by :func:`open_mounts`)."""

    def __init__(
        self,
        callers: Mapping[str, ToolCaller],
        tools: Mapping[str, list[Tool]],
        allow: Mapping[str, Sequence[str]] | None = None,
        gate: ToolGate | None = None,
        untrusted: Collection[str] = UNTRUSTED_KINDS,
    ) -> None:
        self._gate = gate
        self._untrusted = frozenset(untrusted)
        self._callers = dict(callers)
        self._owner: dict[str, str] = {}
        self._hidden: dict[str, str] = {}
        self._schemas: list[JsonDict] = []
        allow = allow or {}
        for kind, listed in tools.items():
            allowed = allow.get(kind)
            missing = [name for name in allowed or () if name not in {t.name for t in listed}]
            if missing:
                raise ToolServerError(f"the grants allow {kind} tool {missing[0]!r}, which the {kind} server lacks")
            for tool in listed:
                if allowed is not None and tool.name not in allowed:
                    self._hidden[tool.name] = kind
                    continue
                if tool.name in self._owner:
                    raise ToolServerError(
                        f"tool {tool.name!r} is offered by both {self._owner[tool.name]!r} and {kind!r}"
                    )
                self._owner[tool.name] = kind
                self._schemas.append(openai_tool(tool))

    @property
    def kinds(self) -> list[str]:
        return list(self._callers)

    def tool_schemas(self) -> list[JsonDict]:
        return list(self._schemas)

    def tool_names(self) -> list[str]:
        return list(self._owner)

    async def call(self, name: str, arguments_json: str) -> ToolOutcome:
        """Run one tool call; a bad name or bad JSON comes back as an error result, not a raise."""
        kind = self._owner.get(name)
        if kind is None:
            known = ", ".join(sorted(self._owner))
            if name in self._hidden:
                return ToolOutcome(f"Error: {name} is not one of your tools (refused). Your tools: {known}", True)
            return ToolOutcome(f"Error: there is no tool named {name!r}. Your tools: {known}", True)
        try:
            parsed: Any = json.loads(arguments_json or "{}")
        except json.JSONDecodeError as error:
            return ToolOutcome(f"Error: the arguments of {name} are not valid JSON ({error})", True)
        if not isinstance(parsed, dict):
            return ToolOutcome(f"Error: the arguments of {name} must be a JSON object", True)
        arguments = cast(dict[str, Any], parsed)
        refusal = await self._gate(kind, name, arguments) if self._gate is not None else None
        if refusal is not None:
            return ToolOutcome(refusal, True)
        result = await self._callers[kind](name, arguments)
        text = result_text(result)
        if kind in self._untrusted:
            text = mark_untrusted(text, f"{kind}.{name}")
        return ToolOutcome(text, result.is_error)


class Connection:
    """One mounted server's MCP session, held open by a task of the mounts' task group (so any of
    the agent's tasks may open it) from :meth:`open` until :meth:`close`."""

    def __init__(self, kind: str, target: ServerTarget, group: TaskGroup) -> None:
        self.kind = kind
        self._target = target
        self._group = group
        self._lock = anyio.Lock()
        self._client: Client | None = None
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

    async def call_tool(self, name: str, arguments: JsonDict) -> CallToolResult:
        return await (await self.open()).call_tool(name, arguments)

    async def list_tools(self) -> list[Tool]:
        return await list_tools(await self.open())

    def close(self) -> None:
        self._closed.set()

    async def open_ahead(self) -> None:
        """Open the session ahead of a call, and have it learn the tools (it checks each result
        against their list, which the first call would otherwise ask for); a failure is left for
        that call to report."""
        with contextlib.suppress(Exception):
            await (await self.open()).list_tools()

    async def _hold(self, *, task_status: TaskStatus[Client]) -> None:
        started = False
        try:
            if isinstance(self._target, ServerPlan):
                # Dispatch's own server, in this process: it speaks the SDK's newest protocol, so the
                # session adopts it at once rather than probing for it (a round trip on a busy loop).
                client = Client(self._target.build(), mode=LATEST_MODERN_VERSION)
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


async def _open_on_mail(link: HubLink, inbox: Connection, watching: anyio.CancelScope) -> None:
    """Open the inbox's session once a message waits (at once if one already does)."""
    with watching:
        await link.wait_for_message()
        await inbox.open_ahead()


async def _listed(kind: str, target: ServerTarget, connection: Connection) -> list[Tool]:
    """A server's tools: read from the server itself in-process, over its session otherwise."""
    if isinstance(target, ServerPlan):
        return target.listed()
    try:
        return await connection.list_tools()
    except ToolServerError:
        raise
    except Exception as error:
        raise ToolServerError(f"the {kind} tool server failed to list its tools: {error}") from error


@asynccontextmanager
async def open_mounts(plan: MountPlan, link: HubLink, gate: ToolGate | None = None) -> AsyncGenerator[Mounts]:
    """Mount every server of ``plan`` (in-process ones connect on first use); disconnect (and stop
    stdio servers) on exit."""
    targets = build_targets(plan, link)
    body_error: BaseException | None = None  # raised after the group, so the group does not wrap it
    async with anyio.create_task_group() as group:
        connections = {kind: Connection(kind, target, group) for kind, target in targets.items()}
        watching = anyio.CancelScope()
        if isinstance(targets.get("inbox"), ServerPlan):
            group.start_soon(_open_on_mail, link, connections["inbox"], watching)
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
                mounts = Mounts(callers | outside.callers, ordered | outside.tools, plan.grants.tools, gate, untrusted)
                mounts.notes = prompt_notes(plan) + outside.notes
                try:
                    yield mounts
                except BaseException as error:  # re-raised below, once the sessions are closed
                    body_error = error
        finally:
            watching.cancel()
            for connection in connections.values():
                connection.close()
    if body_error is not None:
        raise body_error
