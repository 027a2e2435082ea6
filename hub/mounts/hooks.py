"""Running the config's hooks (:mod:`dispatch.hub.config.hooks`) for one agent: :class:`UserHooks`.

Each matching command runs with ``sh -c`` in the project root, with the environment every process
Dispatch starts for agents gets (:func:`~dispatch.servers.sandbox.policy.scrub_environment`) plus
``CLAUDE_PROJECT_DIR`` (the root), side by side with the others of its event, each under its own
timeout (a command still running then is killed, with its process group, reported and ignored).
It reads one JSON object on stdin, as Claude Code's hooks do: ``hook_event_name``, ``session_id``
(the top agent's id), ``transcript_path``, ``cwd``, ``agent_id``, ``agent_name``, ``parent_id``, and
per event ``tool_name``, ``tool_input``, ``tool_use_id``, ``tool_response`` (PostToolUse), ``prompt``
(UserPromptSubmit), ``stop_hook_active`` and ``last_assistant_message`` (Stop, SubagentStop).
``transcript_path`` is :class:`TranscriptFile`'s: the agent's transcript so far, one message a line,
brought up to date just before the commands start (null when the tree keeps no files).

What it answers, as in Claude Code: exit 0 goes on (its stdout may be the JSON
``{"decision": "block", "reason": ...}``, or for PreToolUse ``{"hookSpecificOutput":
{"permissionDecision": "deny", "permissionDecisionReason": ...}}``, which block like exit 2; for
UserPromptSubmit plain stdout is added to the message as context; ``{"continue": false,
"stopReason": ...}`` stops the agent, whatever else it says); exit 2 blocks, its stderr the
reason; any other exit is reported (the hub's log) and ignored. What a block means is the caller's:
a tool call not run, a result with the hook's word after it, a message not delivered, a report
not given yet; a stop ends the agent (:class:`~dispatch.hub.errors.HookStopped`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import anyio
from anyio.abc import ByteReceiveStream, Process

from dispatch.hub.config.hooks import HookCommand, HookEvent, HooksConfig
from dispatch.hub.errors import HookStopped
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


class TranscriptFile:
    """An agent's transcript as a JSON-lines file its hooks read (``transcript_path``): one
    message a line, as the agent's transcript holds it (OpenAI's chat format). Brought up to date
    before each hook runs: what was added since is appended; the whole is written anew the first
    time and when the last message written was replaced since (a prompt a hook added context to)."""

    def __init__(self, path: Path, messages: Callable[[], Sequence[JsonDict]]) -> None:
        self.path = path
        self._messages = messages
        self._written = 0
        self._last: JsonDict | None = None

    def update(self) -> None:
        messages = self._messages()
        count = len(messages)
        start = self._written
        fresh = not start or start > count or messages[start - 1] is not self._last
        self._written = 0  # until this write is whole: a failed one is written anew next time
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w" if fresh else "a", encoding="utf-8") as out:
            out.writelines(json.dumps(m, ensure_ascii=False) + "\n" for m in messages[0 if fresh else start :])
        self._written, self._last = count, messages[-1] if messages else None


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


def _answer(stdout: str) -> JsonDict | None:
    """An exit-0 hook's stdout as its JSON answer, or None (plain text)."""
    if not stdout.startswith("{"):
        return None
    try:
        parsed: object = json.loads(stdout)
    except json.JSONDecodeError:
        return None
    return cast(JsonDict, parsed) if isinstance(parsed, dict) else None


def _json_stop(answer: JsonDict | None) -> str | None:
    """The reason of the stop a JSON answer asks for (``"continue": false``), or None."""
    if answer is None or answer.get("continue", True) is not False:
        return None
    return str(answer.get("stopReason") or "(no stopReason given)")


def _json_block(event: HookEvent, answer: JsonDict | None) -> str | None:
    """The reason of a block a JSON answer asks for, or None."""
    if answer is None:
        return None
    if answer.get("decision") == "block":
        return str(answer.get("reason") or f"a {event} hook blocked it")
    specific = answer.get("hookSpecificOutput")
    if event == "PreToolUse" and isinstance(specific, dict):
        specific = cast(JsonDict, specific)
        if specific.get("permissionDecision") == "deny":
            return str(specific.get("permissionDecisionReason") or "a PreToolUse hook denied it")
    return None


def _context(stdout: str, answer: JsonDict | None) -> str | None:
    """UserPromptSubmit's context: plain stdout, or the JSON's ``additionalContext``."""
    if answer is None:
        return stdout or None
    specific = answer.get("hookSpecificOutput")
    if isinstance(specific, dict):
        extra = cast(JsonDict, specific).get("additionalContext")
        return str(extra) if extra else None
    return None


class UserHooks:
    """The config's hooks as one agent runs them."""

    def __init__(
        self, config: HooksConfig, root: Path, caller: HookCaller, transcript: TranscriptFile | None = None
    ) -> None:
        self.config = config
        self.root = root
        self.caller = caller
        self.transcript = transcript

    def _payload(self, event: HookEvent, fields: JsonDict) -> JsonDict:
        path: str | None = None
        if self.transcript is not None:
            try:
                self.transcript.update()
                path = str(self.transcript.path)
            except OSError as error:  # the disk full, say: the hooks run without it
                log.warning("the transcript for agent %s's hooks could not be written: %s", self.caller.agent_id, error)
        return {
            "hook_event_name": event,
            "session_id": self.caller.session_id,
            "transcript_path": path,
            "cwd": str(self.root),
            "agent_id": self.caller.agent_id,
            "agent_name": self.caller.agent_name,
            "parent_id": self.caller.parent_id,
            **fields,
        }

    async def run(self, event: HookEvent, fields: JsonDict, names: Sequence[str] = ()) -> HookVerdict:
        """Run the commands of ``event`` matching ``names`` side by side; what they said together.
        Raises :class:`HookStopped` when one answered ``{"continue": false}``."""
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
        stops: list[str] = []
        for result in (r for r in ran if r is not None):
            answer = _answer(result.stdout) if result.code == 0 else None
            if (stop := _json_stop(answer)) is not None:
                stops.append(stop)
            reason = self._judge(event, result, answer)
            if reason is not None:
                blocks.append(reason)
            elif event == "UserPromptSubmit" and result.code == 0 and (extra := _context(result.stdout, answer)):
                context.append(extra)
        if stops:  # Claude Code's continue: false, before any decision
            raise HookStopped(f"stopped by a {event} hook: " + "\n".join(stops))
        return HookVerdict("\n".join(blocks) if blocks else None, context)

    def _judge(self, event: HookEvent, ran: _Ran, answer: JsonDict | None) -> str | None:
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
            return _json_block(event, answer)
        first = ran.stderr.splitlines()[0] if ran.stderr else "no stderr"
        log.warning("%s hook %r (agent %s) exited %d: %s; ignored", event, shown, self.caller.agent_id, ran.code, first)
        return None

    # ---- the events ----------------------------------------------------------------------------

    async def pre_tool_use(self, server: str, tool: str, arguments: JsonDict, call_id: str) -> HookVerdict:
        fields: JsonDict = {"tool_name": tool, "tool_input": arguments, "tool_use_id": call_id}
        return await self.run("PreToolUse", fields, (tool, f"{server}__{tool}"))

    async def post_tool_use(
        self, server: str, tool: str, arguments: JsonDict, call_id: str, text: str, is_error: bool
    ) -> HookVerdict:
        response: JsonDict = {"content": text, "is_error": is_error}
        fields: JsonDict = {
            "tool_name": tool,
            "tool_input": arguments,
            "tool_use_id": call_id,
            "tool_response": response,
        }
        return await self.run("PostToolUse", fields, (tool, f"{server}__{tool}"))

    async def user_prompt(self, prompt: str) -> HookVerdict:
        return await self.run("UserPromptSubmit", {"prompt": prompt})

    async def stop(self, answer: str, active: bool) -> HookVerdict:
        event: HookEvent = "Stop" if self.caller.parent_id is None else "SubagentStop"
        return await self.run(event, {"stop_hook_active": active, "last_assistant_message": answer})
