"""Running the config's hooks (:mod:`dispatch.hub.config.hooks`) for one agent: :class:`UserHooks`.

Each matching command runs with ``sh -c`` in the project root, with the environment every process
Dispatch starts for agents gets (:func:`~dispatch.servers.sandbox.policy.scrub_environment`) plus
``CLAUDE_PROJECT_DIR`` (the root), side by side with the others of its event, each under its own
timeout (a command still running then is killed, with its process group, reported and ignored).
It reads one JSON object on stdin, as Claude Code's hooks do: ``hook_event_name``, ``session_id``
(the top agent's id), ``cwd``, ``agent_id``, ``agent_name``, ``parent_id``, and per event
``tool_name``, ``tool_input``, ``tool_response`` (PostToolUse), ``prompt`` (UserPromptSubmit),
``stop_hook_active`` and ``last_assistant_message`` (Stop, SubagentStop).

What it answers, as in Claude Code: exit 0 goes on (its stdout may be the JSON
``{"decision": "block", "reason": ...}``, or for PreToolUse ``{"hookSpecificOutput":
{"permissionDecision": "deny", "permissionDecisionReason": ...}}``, which block like exit 2; for
UserPromptSubmit plain stdout is added to the message as context); exit 2 blocks, its stderr the
reason; any other exit is reported (the hub's log) and ignored. What a block means is the caller's:
a tool call not run, a result with the hook's word after it, a message not delivered, a report
not given yet.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import anyio
from anyio.abc import ByteReceiveStream, Process

from dispatch.hub.config.hooks import HookCommand, HookEvent, HooksConfig
from dispatch.hub.llm.types import JsonDict
from dispatch.servers.sandbox.policy import scrub_environment

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 64 * 1024
"""What is kept of a hook's stdout and of its stderr."""
BLOCK_EXIT = 2


@dataclass(frozen=True)
class HookCaller:
    """Whose hooks these are, as the hooks' input names it."""

    agent_id: str
    agent_name: str
    parent_id: str | None
    session_id: str
    """The top agent of its tree."""


@dataclass(frozen=True)
class HookVerdict:
    """What the commands of one event said, together."""

    blocked: str | None = None
    """Set when one blocked: the reasons (exit 2's stderr, or the JSON's reason), one per line."""
    context: list[str] = field(default_factory=list[str])
    """Text for the model besides (UserPromptSubmit's plain stdout)."""


@dataclass(frozen=True)
class _Ran:
    command: HookCommand
    code: int | None
    """None: killed at its timeout."""
    stdout: str
    stderr: str


async def _read(stream: ByteReceiveStream | None, into: bytearray) -> None:
    if stream is None:
        return
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
        while True:
            chunk = await stream.receive()
            if len(into) < MAX_OUTPUT_BYTES:
                into.extend(chunk[: MAX_OUTPUT_BYTES - len(into)])


async def _feed(process: Process, data: bytes) -> None:
    if process.stdin is None:
        return
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await process.stdin.send(data)
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        await process.stdin.aclose()


def _kill_group(process: Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def run_command(command: HookCommand, payload: JsonDict, root: Path) -> _Ran:
    """Run one hook command with ``payload`` as JSON on stdin; killed (with its process group) at
    its timeout."""
    env = scrub_environment(os.environ) | {"CLAUDE_PROJECT_DIR": str(root)}
    data = json.dumps(payload).encode()
    out, err = bytearray(), bytearray()
    process = await anyio.open_process(
        ["/bin/sh", "-c", command.command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=root,
        env=env,
        start_new_session=True,
    )
    code: int | None = None
    try:
        with anyio.move_on_after(command.timeout):
            async with anyio.create_task_group() as group:
                group.start_soon(_feed, process, data)
                group.start_soon(_read, process.stdout, out)
                group.start_soon(_read, process.stderr, err)
                code = await process.wait()
    finally:
        _kill_group(process)  # its children too, at the timeout or whatever stopped it
        with anyio.CancelScope(shield=True):
            await process.aclose()
    return _Ran(command, code, _text(out), _text(err))


def _text(raw: bytearray) -> str:
    return bytes(raw).decode("utf-8", errors="replace").strip()


def _json_block(event: HookEvent, stdout: str) -> str | None:
    """The reason of a block an exit-0 hook's JSON stdout asks for, or None."""
    if not stdout.startswith("{"):
        return None
    try:
        parsed: object = json.loads(stdout)
    except json.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    answer = cast(JsonDict, parsed)
    if answer.get("decision") == "block":
        return str(answer.get("reason") or f"a {event} hook blocked it")
    specific = answer.get("hookSpecificOutput")
    if event == "PreToolUse" and isinstance(specific, dict):
        specific = cast(JsonDict, specific)
        if specific.get("permissionDecision") == "deny":
            return str(specific.get("permissionDecisionReason") or "a PreToolUse hook denied it")
    return None


def _context(stdout: str) -> str | None:
    """UserPromptSubmit's context: plain stdout, or the JSON's ``additionalContext``."""
    if not stdout.startswith("{"):
        return stdout or None
    try:
        parsed: object = json.loads(stdout)
    except json.JSONDecodeError:
        return stdout
    specific = cast(JsonDict, parsed).get("hookSpecificOutput") if isinstance(parsed, dict) else None
    if isinstance(specific, dict):
        extra = cast(JsonDict, specific).get("additionalContext")
        return str(extra) if extra else None
    return None


class UserHooks:
    """The config's hooks as one agent runs them."""

    def __init__(self, config: HooksConfig, root: Path, caller: HookCaller) -> None:
        self.config = config
        self.root = root
        self.caller = caller

    def _payload(self, event: HookEvent, fields: JsonDict) -> JsonDict:
        return {
            "hook_event_name": event,
            "session_id": self.caller.session_id,
            "cwd": str(self.root),
            "agent_id": self.caller.agent_id,
            "agent_name": self.caller.agent_name,
            "parent_id": self.caller.parent_id,
            **fields,
        }

    async def run(self, event: HookEvent, fields: JsonDict, names: Sequence[str] = ()) -> HookVerdict:
        """Run the commands of ``event`` matching ``names`` side by side; what they said together."""
        commands = self.config.commands(event, names)
        if not commands:
            return HookVerdict()
        payload = self._payload(event, fields)
        ran: list[_Ran | None] = [None] * len(commands)

        async def one(index: int, command: HookCommand) -> None:
            try:
                ran[index] = await run_command(command, payload, self.root)
            except OSError as error:  # sh missing, the root gone: reported, ignored
                log.warning("%s hook %r could not start: %s", event, command.command, error)

        async with anyio.create_task_group() as group:
            for index, command in enumerate(commands):
                group.start_soon(one, index, command)
        blocks: list[str] = []
        context: list[str] = []
        for result in (r for r in ran if r is not None):
            reason = self._judge(event, result)
            if reason is not None:
                blocks.append(reason)
            elif event == "UserPromptSubmit" and result.code == 0 and (extra := _context(result.stdout)):
                context.append(extra)
        return HookVerdict("\n".join(blocks) if blocks else None, context)

    def _judge(self, event: HookEvent, ran: _Ran) -> str | None:
        """A block's reason, or None; timeouts and other exits are reported here."""
        shown = ran.command.command
        if ran.code is None:
            log.warning(
                "%s hook %r (agent %s) was killed at its %gs timeout; ignored",
                event,
                shown,
                self.caller.agent_id,
                ran.command.timeout,
            )
            return None
        if ran.code == BLOCK_EXIT:
            return ran.stderr or f"a {event} hook ({shown}) blocked it, saying nothing on stderr"
        if ran.code == 0:
            return _json_block(event, ran.stdout)
        first = ran.stderr.splitlines()[0] if ran.stderr else "no stderr"
        log.warning("%s hook %r (agent %s) exited %d: %s; ignored", event, shown, self.caller.agent_id, ran.code, first)
        return None

    # ---- the events ----------------------------------------------------------------------------

    async def pre_tool_use(self, server: str, tool: str, arguments: JsonDict) -> HookVerdict:
        fields: JsonDict = {"tool_name": tool, "tool_input": arguments}
        return await self.run("PreToolUse", fields, (tool, f"{server}__{tool}"))

    async def post_tool_use(
        self, server: str, tool: str, arguments: JsonDict, text: str, is_error: bool
    ) -> HookVerdict:
        response: JsonDict = {"content": text, "is_error": is_error}
        fields: JsonDict = {"tool_name": tool, "tool_input": arguments, "tool_response": response}
        return await self.run("PostToolUse", fields, (tool, f"{server}__{tool}"))

    async def user_prompt(self, prompt: str) -> HookVerdict:
        return await self.run("UserPromptSubmit", {"prompt": prompt})

    async def stop(self, answer: str, active: bool) -> HookVerdict:
        event: HookEvent = "Stop" if self.caller.parent_id is None else "SubagentStop"
        return await self.run(event, {"stop_hook_active": active, "last_assistant_message": answer})
