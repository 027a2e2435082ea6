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
(:mod:`dispatch.hub.mounts.outside`): their results reach the model marked untrusted, and one
whose tool list changed since the user pinned it is left out, with a prompt note saying why. Tool
names are unique across an agent's mounts: a clash is refused, naming both servers (grant one of
them narrowed, e.g. ``github: [get_issue]``, to resolve it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from mcp_types import CallToolResult, TextContent, Tool

from dispatch.hub.errors import ToolServerError
from dispatch.hub.llm.types import JsonDict
from dispatch.hub.mounts.untrusted import mark_untrusted
from dispatch.hub.policy.servers import UNTRUSTED_KINDS

ToolGate = Callable[[str, str, JsonDict], Awaitable[str | None]]
"""``gate(kind, name, arguments)`` before a tool call: None to run it, or the refusal the model reads
instead (the hub's checkpoints, :mod:`dispatch.hub.service.approvals`); it may wait for the user."""


ToolCaller = Callable[[str, JsonDict], Awaitable[CallToolResult]]
"""``call(name, arguments)`` on one server: an MCP client's ``call_tool``, or one connected on demand."""


@dataclass(frozen=True)
class ToolOutcome:
    """A tool's result as the model will read it."""

    text: str
    is_error: bool


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
