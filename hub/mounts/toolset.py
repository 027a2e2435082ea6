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
from dataclasses import dataclass, replace
from typing import Any, Protocol, cast

from mcp_types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
    Tool,
)

from dispatch.hub.errors import ToolServerError
from dispatch.hub.llm.images import ToolImage, kept, placeholder, size_text
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
    """A tool's result as the model will read it: its text, and the images it returned to be sent
    after the step's tool results (:mod:`dispatch.hub.llm.images`; the text says where each went)."""

    text: str
    is_error: bool
    images: tuple[ToolImage, ...] = ()
    blocked: str | None = None
    """Set when a PreToolUse hook blocked the call (it did not run): the hook's reason."""


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


def _bytes_of(data: str) -> str:
    return size_text(len(data) * 3 // 4)


def _block(block: ContentBlock, images: list[ToolImage]) -> str:
    """One content block as text; an image (or an embedded image resource) also into ``images``."""
    match block:
        case TextContent(text=text):
            return text
        case (
            ImageContent(data=data, mime_type=mime)
            | EmbeddedResource(resource=BlobResourceContents(blob=data, mime_type=str() as mime))
        ) if mime.startswith("image/"):
            image = ToolImage(mime, data)
            if kept(image):
                images.append(image)
            return placeholder(image)
        case EmbeddedResource(resource=TextResourceContents(uri=uri, text=text)):
            return f"[resource {uri}]\n{text}"
        case EmbeddedResource(resource=BlobResourceContents(uri=uri, blob=blob, mime_type=mime)):
            return f"[resource {uri} ({mime or 'binary'}, {_bytes_of(blob)}) not shown: not text or an image]"
        case AudioContent(data=data, mime_type=mime):
            return f"[audio ({mime}, {_bytes_of(data)}) not shown: agents are sent text and images only]"
        case ResourceLink(uri=uri, name=name, description=description):
            return f"[resource link {uri}: {name}{f' ({description})' if description else ''}]"
        case _:
            return f"[{block.type} content]"


def result_outcome(result: CallToolResult) -> ToolOutcome:
    """A tool's result for the model: its text blocks, what else it returned said in the text (an
    image also kept to be sent as one); ``structuredContent`` as JSON when no block carries text."""
    images: list[ToolImage] = []
    parts = [_block(block, images) for block in result.content]
    if result.structured_content is not None and not any(isinstance(b, TextContent) for b in result.content):
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return ToolOutcome("\n".join(parts) if parts else "(no output)", result.is_error, tuple(images))


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

    async def call(
        self, name: str, arguments_json: str, output: ToolOutput | None = None, call_id: str = ""
    ) -> ToolOutcome:
        """Run one tool call; a bad name or bad JSON comes back as an error result, not a raise.
        ``output`` gets the call's output while it runs, when its server sends any (the shell);
        ``call_id`` (the model's id of the call) is the hooks' ``tool_use_id``."""
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
            verdict = await self._hooks.pre_tool_use(kind, name, arguments, call_id)
            if verdict.blocked is not None:
                text = f"Error: not run: a PreToolUse hook blocked {name}: {verdict.blocked}"
                return ToolOutcome(text, True, blocked=verdict.blocked)
        refusal = await self._gate(kind, name, arguments) if self._gate is not None else None
        if refusal is not None:
            return ToolOutcome(refusal, True)
        async with self._track(kind, name, arguments) if self._track is not None else nullcontext():
            result = await self._callers[kind](name, arguments, output)
        outcome = result_outcome(result)
        if kind in self._untrusted:
            outcome = replace(outcome, text=mark_untrusted(outcome.text, f"{kind}.{name}"))
        if self._hooks is not None:
            verdict = await self._hooks.post_tool_use(kind, name, arguments, call_id, outcome.text, result.is_error)
            if verdict.blocked is not None:
                note = f"\n[a PostToolUse hook on this call (it ran): {verdict.blocked}]"
                outcome = replace(outcome, text=outcome.text + note)
        return outcome
