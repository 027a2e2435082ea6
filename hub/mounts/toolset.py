"""An agent's mounted tools as one list: :class:`Mounts` routes each call to the session of the
server that offers it, marks untrusted servers' results (:mod:`dispatch.hub.mounts.untrusted`),
and gives the model its tools' schemas; :class:`ToolOutcome` is a result as the model reads it.
Names are unique across an agent's mounts: a clash is refused naming both servers. Opening the
sessions is :mod:`dispatch.hub.mounts.connection`'s job; what to mount is
:mod:`dispatch.hub.mounts.plan`'s.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, cast

from mcp_types import CallToolResult, TextContent, Tool

from dispatch.hub.errors import ToolServerError
from dispatch.hub.llm.types import JsonDict
from dispatch.hub.mounts.hooks import UserHooks
from dispatch.hub.mounts.untrusted import mark_untrusted
from dispatch.hub.policy.servers import UNTRUSTED_KINDS

ToolGate = Callable[[str, str, JsonDict], Awaitable[str | None]]
"""``gate(kind, name, arguments)`` before a tool call: None to run it, or the refusal the model reads
instead (the hub's checkpoints, :mod:`dispatch.hub.service.approvals`); it may wait for the user."""


ToolTrack = Callable[[str, str, JsonDict], AbstractAsyncContextManager[None]]
"""``track(kind, name, arguments)``: held around each call that runs (the hub's change tracking,
:mod:`dispatch.hub.changes.tracker`, snapshots the files a writing call may change)."""


ToolOutput = Callable[[str], None]
"""Called with a running tool call's output as it comes (the shell's, sent as MCP progress messages)."""


class ToolCaller(Protocol):
    """``call(name, arguments, output)`` on one server: an MCP client's ``call_tool``, or one
    connected on demand; ``output``, when given, gets what the call reports while it runs."""

    def __call__(
        self, name: str, arguments: JsonDict, output: ToolOutput | None = None, /
    ) -> Awaitable[CallToolResult]: ...


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
    may hold it for the user's approval or refuse it; ``track`` is held around each call that runs.
    ``hooks`` (the config's, :mod:`dispatch.hub.mounts.hooks`) run before both (a PreToolUse hook
    may block the call: the model reads its reason) and after the call (a PostToolUse hook's
    objection follows the result). Results of the ``untrusted`` kinds (errors too) reach the model
    marked as outside data, terminal controls stripped.
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
        track: ToolTrack | None = None,
        hooks: UserHooks | None = None,
    ) -> None:
        self._gate = gate
        self._hooks = hooks
        self._track = track
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

    async def call(self, name: str, arguments_json: str, output: ToolOutput | None = None) -> ToolOutcome:
        """Run one tool call; a bad name or bad JSON comes back as an error result, not a raise.
        ``output`` gets the call's output while it runs, when its server sends any (the shell)."""
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
        if self._hooks is not None:
            verdict = await self._hooks.pre_tool_use(kind, name, arguments)
            if verdict.blocked is not None:
                return ToolOutcome(f"Error: not run: a PreToolUse hook blocked {name}: {verdict.blocked}", True)
        refusal = await self._gate(kind, name, arguments) if self._gate is not None else None
        if refusal is not None:
            return ToolOutcome(refusal, True)
        async with self._track(kind, name, arguments) if self._track is not None else nullcontext():
            result = await self._callers[kind](name, arguments, output)
        text = result_text(result)
        if kind in self._untrusted:
            text = mark_untrusted(text, f"{kind}.{name}")
        if self._hooks is not None:
            verdict = await self._hooks.post_tool_use(kind, name, arguments, text, result.is_error)
            if verdict.blocked is not None:
                text += f"\n[a PostToolUse hook on this call (it ran): {verdict.blocked}]"
        return ToolOutcome(text, result.is_error)
