"""Mounts: the tool servers one agent gets, built from its grants and connected as MCP clients.

Which servers: ``inbox`` and ``fs`` always (``fs`` read-only unless the agent has a write scope),
``shell`` with the shell grant, ``summon`` with the summon grant and depth left, ``lsp`` with the
lsp grant when the hub runs language servers (always in-process: they are shared); the grants'
per-server allow-lists narrow each to some of its tools (an empty list: not mounted). How: in-process
(``mcp.Client(server)`` on a server built for this agent's scope, no subprocess) by default, or
over stdio when the spec asks for process isolation; both run the same server code. ``inbox`` and
``summon`` are the agent's link to the hub, so they always run in-process.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from mcp import Client, StdioServerParameters
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent, Tool

from dispatch.hub.errors import ToolServerError
from dispatch.hub.grants import ROOT, Grants
from dispatch.servers import fs, inbox, lsp, shell, summon
from dispatch.servers.hublink import HubLink
from dispatch.servers.lsp import LspBackend
from dispatch.servers.sandbox import SandboxSetting, ShellMode, choose_shell_mode

JsonDict = dict[str, Any]
ServerTarget = MCPServer | StdioServerParameters
ToolGate = Callable[[str, str, JsonDict], Awaitable[str | None]]
"""``gate(kind, name, arguments)`` before a tool call: None to run it, or the refusal the model reads
instead (the hub's checkpoints, :mod:`dispatch.hub.approvals`); it may wait for the user."""


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

    def kinds(self) -> list[str]:
        kinds = [kind for kind in ("inbox", "fs", "shell") if self.grants.serves(kind)]
        if self.grants.serves("summon") and self.grants.max_depth != 0:
            kinds.append("summon")
        if self.grants.serves("lsp") and self.lsp is not None:
            kinds.append("lsp")
        return kinds

    def write_paths(self) -> list[Path]:
        return [self.root if p == ROOT else self.root / p for p in self.grants.write]


def _module_params(module: str, args: list[str]) -> StdioServerParameters:
    env = shell.clean_environment(os.environ)
    return StdioServerParameters(command=sys.executable, args=["-m", module, *args], env=env)


def _fs_target(plan: MountPlan, link: HubLink) -> ServerTarget:
    if not plan.isolated:
        return fs.build_server(plan.root, plan.write_paths(), ask=link.request_access)
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
        return shell.build_server(
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


def prompt_notes(plan: MountPlan) -> tuple[str, ...]:
    """What the agent's system prompt says about its mounts (the shell's sandbox, or its absence)."""
    return (shell_mode(plan).note,) if "shell" in plan.kinds() else ()


def build_targets(plan: MountPlan, link: HubLink) -> dict[str, ServerTarget]:
    """The server (or the command that starts it) for each mount of the plan."""
    targets: dict[str, ServerTarget] = {}
    for kind in plan.kinds():
        if kind == "inbox":
            targets[kind] = inbox.build_server(link, detached=plan.detached)
        elif kind == "summon":
            targets[kind] = summon.build_server(link)
        elif kind == "fs":
            targets[kind] = _fs_target(plan, link)
        elif kind == "shell":
            targets[kind] = _shell_target(plan, link)
        elif kind == "lsp" and plan.lsp is not None:
            targets[kind] = lsp.build_server(plan.root, plan.lsp)
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
    may hold it for the user's approval or refuse it.
    """

    notes: tuple[str, ...] = ()
    """Lines for the agent's system prompt about these mounts (set by :func:`open_mounts`)."""

    def __init__(
        self,
        clients: Mapping[str, Client],
        tools: Mapping[str, list[Tool]],
        allow: Mapping[str, Sequence[str]] | None = None,
        gate: ToolGate | None = None,
    ) -> None:
        self._gate = gate
        self._clients = dict(clients)
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
        return list(self._clients)

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
        result = await self._clients[kind].call_tool(name, arguments)
        return ToolOutcome(result_text(result), result.is_error)


@asynccontextmanager
async def open_mounts(plan: MountPlan, link: HubLink, gate: ToolGate | None = None) -> AsyncGenerator[Mounts]:
    """Connect every mount of ``plan``; disconnect (and stop stdio servers) on exit."""
    async with AsyncExitStack() as stack:
        clients: dict[str, Client] = {}
        tools: dict[str, list[Tool]] = {}
        for kind, target in build_targets(plan, link).items():
            try:
                client = await stack.enter_async_context(Client(target))
                tools[kind] = (await client.list_tools()).tools
            except Exception as error:  # a server that cannot start is this agent's failure, named
                raise ToolServerError(f"the {kind} tool server failed to start: {error}") from error
            clients[kind] = client
        mounts = Mounts(clients, tools, plan.grants.tools, gate)
        mounts.notes = prompt_notes(plan)
        yield mounts
