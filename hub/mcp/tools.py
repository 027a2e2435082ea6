"""The hub as an MCP server: how Claude Desktop or any MCP client drives Dispatch.

Built on :class:`~dispatch.hub.service.contract.HubService` only, so the same tools serve a hub in this
process (``dispatch mcp`` with none running, and ``/mcp`` on ``dispatch serve``) and a running hub
reached over its HTTP API (``dispatch mcp`` attaching to it). Ids are checked for their form
before any lookup; the service's user errors come back as tool errors that say what is wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.extension import Extension
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import EmptyResult, SetLevelRequestParams

from dispatch.hub.agents.spec import Caps
from dispatch.hub.errors import UserError
from dispatch.hub.events import (
    AgentProgress,
    AgentResumed,
    AgentSpawned,
    AgentStateChanged,
    AgentStepped,
    ApprovalResolved,
    EventData,
    MessageDelivered,
    MessageSent,
    ToolCalled,
    ToolReturned,
)
from dispatch.hub.mcp.tasks import HubTasks, ServiceTasks
from dispatch.hub.service.contract import HubService
from dispatch.hub.views import AgentView, Decision, Remember
from dispatch.servers.hublink import USER_KINDS, MessageKind

T = TypeVar("T")
AGENT_ID = re.compile(r"^a-[0-9a-f]{8}$")
PLAIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
TERMINAL = ("done", "failed", "cancelled", "interrupted")
MAX_WAIT_S = 3600.0
PROGRESS_TAIL = 5


def check_agent_id(agent_id: str) -> str:
    if not AGENT_ID.match(agent_id):
        raise ToolError(f"agent id {agent_id!r} is not of the form 'a-' and eight hex digits (see agents())")
    return agent_id


def check_plain_id(what: str, value: str) -> str:
    if not PLAIN_ID.match(value):
        raise ToolError(f"{what} {value!r} is not a valid id")
    return value


async def _service_call(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except UserError as error:
        raise ToolError(str(error)) from error


def _dump(value: Any) -> str:
    return json.dumps(value, indent=1, default=str)


def _brief(agent: AgentView) -> dict[str, Any]:
    return {
        "id": agent.id,
        "parent_id": agent.parent_id,
        "name": agent.name,
        "template": agent.template,
        "state": agent.state,
        "reason": agent.reason,
        "model": agent.model,
        "tokens": agent.tokens_in + agent.tokens_out,
        "cost_usd": round(agent.cost_usd, 6),
    }


class HubTools:
    """The hub's MCP tools, each a method over one service."""

    def __init__(self, service: HubService) -> None:
        self._service = service

    async def start(
        self,
        task: str,
        template: str | None = None,
        model: str | None = None,
        detached: bool = False,
        root: str | None = None,
        budget_usd: float | None = None,
        max_tokens: int | None = None,
        max_steps: int | None = None,
    ) -> str:
        """Start a top agent on `task` (optionally as a template, with a model name or tag) in the
        project `root` (an absolute path; default: the project `dispatch mcp` was started for, else
        the hub's). `budget_usd` / `max_tokens` cap what it and its children may spend (it fails,
        reason `budget`, on reaching one), `max_steps` its own steps; the template's when left out.
        Returns its id at once; the work runs in the background."""
        if not task.strip():
            raise ToolError("task is empty")
        caps = Caps(budget_usd, max_tokens, max_steps)
        agent = await _service_call(
            lambda: self._service.start(task, template=template, model=model, detached=detached, root=root, caps=caps)
        )
        return _dump({"agent_id": agent.id, "state": agent.state})

    async def agents(self) -> str:
        """Every agent: id, parent, name, template, state and reason, model, tokens and cost."""
        return _dump([_brief(a) for a in (await self._service.agents())])

    async def status(self, agent_id: str) -> str:
        """One agent's state and reason, its latest progress notes, what it waits on, usage and caps."""
        detail = await _service_call(lambda: self._service.agent(check_agent_id(agent_id)))
        body = _brief(detail) | {
            "steps": detail.steps,
            "progress": detail.progress[-PROGRESS_TAIL:],
            "question": detail.question,
            "waiting_until": detail.waiting_until,
            "error": detail.error,
            "caps": {"budget_usd": detail.budget_usd, "max_tokens": detail.max_tokens, "max_steps": detail.max_steps},
        }
        return _dump(body)

    async def wait(self, agent_id: str, timeout_s: float = 60.0, ctx: Context | None = None) -> str:
        """Wait until the agent finishes and return its report, or `timed_out: true` after
        timeout_s while it keeps running. Sends progress notifications meanwhile."""
        check_agent_id(agent_id)
        if not 0 < timeout_s <= MAX_WAIT_S:
            raise ToolError(f"timeout_s must be between 0 and {MAX_WAIT_S:.0f}")
        detail = await _service_call(lambda: self._service.agent(agent_id))
        seen = 0
        with anyio.move_on_after(timeout_s):
            async with self._service.follow_events() as events:
                detail = await _service_call(lambda: self._service.agent(agent_id))
                while detail.state not in TERMINAL:
                    async for event in events:
                        if event.agent_id != agent_id:
                            continue
                        seen += 1
                        if ctx is not None:
                            await ctx.report_progress(seen, None, f"{event.type} {_progress_text(event.data)}")
                        if isinstance(event.data, AgentStateChanged) and event.data.state in TERMINAL:
                            break
                    detail = await _service_call(lambda: self._service.agent(agent_id))
        if detail.state not in TERMINAL:
            return _dump({"agent_id": agent_id, "timed_out": True, "state": detail.state, "reason": detail.reason})
        return _dump({"agent_id": agent_id, "state": detail.state, "report": detail.report, "error": detail.error})

    async def result(self, agent_id: str, max_chars: int = 20000) -> str:
        """The agent's report (or why it has none), cut to max_chars with `truncated: true`."""
        if max_chars < 1:
            raise ToolError("max_chars must be at least 1")
        detail = await _service_call(lambda: self._service.agent(check_agent_id(agent_id)))
        report = detail.report or ""
        body: dict[str, Any] = {"agent_id": agent_id, "state": detail.state, "report": report[:max_chars]}
        if len(report) > max_chars:
            body |= {"truncated": True, "full_chars": len(report)}
        if detail.report is None:
            body["note"] = detail.error or f"no report yet ({detail.state})"
        return _dump(body)

    async def send(self, agent_id: str, text: str, kind: str = "instruction", wait_for_delivery_s: float = 0.0) -> str:
        """Message a running agent (kind: instruction, correction, context or data). It reads it
        right after its next tool result. With wait_for_delivery_s, also waits for the receipt."""
        check_agent_id(agent_id)
        kinds = [k.value for k in USER_KINDS]
        if kind not in kinds:
            raise ToolError(f"kind {kind!r} is not one of {', '.join(kinds)}")
        if not text.strip():
            raise ToolError("text is empty")
        if not 0 <= wait_for_delivery_s <= MAX_WAIT_S:
            raise ToolError(f"wait_for_delivery_s must be between 0 and {MAX_WAIT_S:.0f}")
        async with self._service.follow_events() as events:
            message_id = await _service_call(lambda: self._service.send(agent_id, text, MessageKind(kind)))
            body: dict[str, Any] = {"message_id": message_id, "delivered": False}
            with anyio.move_on_after(wait_for_delivery_s):
                if wait_for_delivery_s > 0:
                    async for event in events:
                        delivered = event.data
                        if isinstance(delivered, MessageDelivered) and delivered.message_id == message_id:
                            body |= {"delivered": True, "step": delivered.step}
                            break
        return _dump(body)

    async def cancel(self, agent_id: str) -> str:
        """Cancel an agent and everything it started."""
        agent = await _service_call(lambda: self._service.cancel(check_agent_id(agent_id)))
        return _dump(_brief(agent))

    async def compact(self, agent_id: str) -> str:
        """Have a running agent compact its context before its next model call: the older part of
        its transcript is summarised (it does so by itself near its model's window)."""
        agent = await _service_call(lambda: self._service.compact(check_agent_id(agent_id)))
        return _dump(_brief(agent) | {"compactions": agent.compactions})

    async def changes(self, agent_id: str, own: bool = False, max_chars: int = 50000) -> str:
        """What the agent and its descendants (`own`: the agent alone) changed in the project's
        files: each file with its status and line counts, and the unified diff (cut to max_chars
        with `truncated: true`)."""
        if max_chars < 1:
            raise ToolError("max_chars must be at least 1")
        found = await _service_call(lambda: self._service.changes(check_agent_id(agent_id), own=own))
        body = found.model_dump()
        if len(found.diff) > max_chars:
            body |= {"diff": found.diff[:max_chars], "truncated": True, "full_chars": len(found.diff)}
        return _dump(body)

    async def rewind(self, agent_id: str, force: bool = False, undo: bool = False) -> str:
        """Put back the files the agent and its descendants changed, as they were before it started
        (a running agent is cancelled first). Refused, naming the files, when someone changed one
        since, unless `force`. `undo`: undo the agent's last rewind."""
        done = await _service_call(lambda: self._service.rewind(check_agent_id(agent_id), force=force, undo=undo))
        return _dump(done.model_dump())

    async def approvals(self) -> str:
        """Pending approvals: path permissions and checkpoints, with the asking agent's chain."""
        pending = await _service_call(lambda: self._service.approvals("pending"))
        return _dump([a.model_dump() for a in pending])

    async def approve(self, approval_id: str, decision: Decision, remember: Remember = "once") -> str:
        """Answer an approval: approve or deny; remember once, for the session, or always."""
        check_plain_id("approval id", approval_id)
        answered = await _service_call(lambda: self._service.answer_approval(approval_id, decision, remember))
        return _dump(answered.model_dump())

    async def chats(self, query: str | None = None) -> str:
        """Saved dispatch conversations, newest first; `query` searches titles and content."""
        found = await _service_call(lambda: self._service.chats(query))
        return _dump([c.model_dump() for c in found])


async def set_log_level(ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
    """``logging/setLevel`` (protocol versions up to 2025-11-25), acknowledged: the hub's tools send
    progress notifications, never log messages, so there is nothing for a level to filter."""
    return EmptyResult()


class HubServer(MCPServer[Any]):
    """The SDK's server, answering ``logging/setLevel`` too: the SDK's high-level server leaves it
    out, so a client that sets a level (MCP's conformance suite does) got "Method not found"."""

    def __init__(self, name: str, instructions: str, extensions: Sequence[Extension] = ()) -> None:
        super().__init__(name, instructions=instructions, log_level="WARNING", extensions=extensions)
        self._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, set_log_level)


def build_server(service: HubService) -> HubServer:
    """The hub's MCP tools over ``service``."""
    server = HubServer(
        "dispatch",
        instructions=(
            "Dispatch runs AI coding agents. start() a task, then wait() for its result or follow it "
            "with status(); send() a running agent a message at any time; answer its approvals."
        ),
        extensions=[HubTasks(ServiceTasks(service))],
    )
    tools = HubTools(service)
    for name in (
        *("start", "agents", "status", "wait", "result", "send", "cancel", "compact", "changes", "rewind"),
        *("approvals", "approve", "chats"),
    ):
        server.add_tool(getattr(tools, name), structured_output=False)
    return server


def _progress_text(data: EventData) -> str:
    """What the event is about, in a few words: a state, a name, a text or a message id."""
    match data:
        case AgentStateChanged(state=said) | ApprovalResolved(state=said):
            pass
        case AgentSpawned(name=said) | AgentResumed(name=said) | ToolCalled(name=said) | ToolReturned(name=said):
            pass
        case AgentStepped(text=text):
            said = text or ""
        case AgentProgress(text=said) | MessageSent(text=said):
            pass
        case MessageDelivered(message_id=said):
            pass
        case _:
            said = ""
    return said[:200]
