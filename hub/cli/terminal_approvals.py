"""``dispatch run``'s approvals, answered in the terminal.

A run's agents ask as a served hub's do (:mod:`dispatch.hub.service.approvals`): a checkpoint, a
path outside the project, a changed tool list of an outside server. Here the answer comes from
the terminal, by the run's policy:

- ``ask`` (stdin is a terminal, no ``--json``): each request is shown (the agent chain, the path
  and operation or the checkpoint and what it holds, a change to files as its diff, coloured:
  added lines green, removed red) and the user types ``y`` (approve once),
  ``s`` (approve for the session) or ``n`` (deny); one request at a time, the live view paused.
- ``yes`` (``--yes``): checkpoints and path requests are approved as they come, each announced
  in a line. A changed tool list is not: it is asked when there is a terminal, else left pending.
- ``refuse`` (no terminal): checkpoints and path requests are denied at once, the asking agent
  reading why, and the user seeing the same line; a changed tool list is left pending.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from typing import Literal

import anyio
from rich.console import Console
from rich.text import Text

from dispatch.hub.errors import UserError
from dispatch.hub.events import ApprovalRequested, Event
from dispatch.hub.service.hub import Hub
from dispatch.hub.views import Decision, Remember

Policy = Literal["ask", "yes", "refuse"]

NO_TERMINAL = (
    "dispatch run, which has no terminal to ask in (stdin is not a terminal, or --json or --jsonl); --yes approves"
)
BY_YES = "dispatch run --yes"
CONTENT_LINES = 30
DIFF_LINES = 80
"""At most this many lines of a checkpoint's diff are shown in the terminal."""
_DIFF_STYLES = (("+++", "bold"), ("---", "bold"), ("diff --git", "bold"), ("@@", "cyan"), ("+", "green"), ("-", "red"))
CHOICES: dict[str, tuple[Decision, Remember]] = {
    "y": ("approve", "once"),
    "yes": ("approve", "once"),
    "s": ("approve", "session"),
    "session": ("approve", "session"),
    "n": ("deny", "once"),
    "no": ("deny", "once"),
}


def asked(data: ApprovalRequested) -> str:
    """What is asked, in one line: who asks, and for what."""
    chain = " › ".join(data.chain) or "an agent"
    if data.kind == "checkpoint":
        return f"{chain} is at checkpoint {data.checkpoint}"
    if data.kind == "tool_change":
        return f"the tool list of outside MCP server {data.server!r} changed (asked for {chain})"
    return f"{chain} asks to {data.operation} {data.path}"


def _excerpt(text: str | None) -> list[str]:
    lines = (text or "").strip().splitlines()
    shown = [f"    {line}" for line in lines[:CONTENT_LINES]]
    if len(lines) > CONTENT_LINES:
        shown.append(f"    … {len(lines) - CONTENT_LINES} more lines")
    return shown


def diff_text(diff: str) -> Text:
    """The diff indented, its added lines green, removed red, hunks cyan; cut at :data:`DIFF_LINES`."""
    lines = diff.rstrip("\n").splitlines()
    text = Text()
    for line in lines[:DIFF_LINES]:
        style = next((s for prefix, s in _DIFF_STYLES if line.startswith(prefix)), "")
        text.append("    ")
        text.append(line, style=style)
        text.append("\n")
    if len(lines) > DIFF_LINES:
        text.append(f"    … {len(lines) - DIFF_LINES} more lines of the diff (GET /api/approvals shows them)\n")
    return text


class TerminalApprovals:
    """Answers the hub's approvals as they are requested, by ``policy``; ``paused()`` holds the
    live view while a question is on the screen."""

    def __init__(
        self,
        hub: Hub,
        policy: Policy,
        console: Console,
        paused: Callable[[], AbstractContextManager[None]],
        *,
        terminal: bool,
        stdin: int = 0,
    ) -> None:
        self._hub = hub
        self._policy = policy
        self._console = console
        self._paused = paused
        self._terminal = terminal
        self._stdin = stdin

    async def follow(self, events: AsyncIterator[Event]) -> None:
        """Answer every ``approval.requested`` among ``events``, in order, until they end."""
        async for event in events:
            if isinstance(event.data, ApprovalRequested):
                await self._answer(event.data)

    async def _answer(self, data: ApprovalRequested) -> None:
        approval_id, notice = data.approval_id, data.kind == "tool_change"
        if self._policy == "yes" and not notice:
            self._say(f"approved by --yes ({approval_id}): {asked(data)}")
            await self._decide(approval_id, "approve", "once", BY_YES)
        elif self._policy == "ask" or (notice and self._terminal):
            with self._paused():
                choice = await self._prompt(data)
            if choice is None:
                await self._decide(approval_id, "deny", "once", "dispatch run (the terminal closed)")
            else:
                await self._decide(approval_id, *choice, "the user")
        elif notice:
            self._say(f"left pending ({approval_id}): {asked(data)}; `dispatch serve` asks about it")
        else:
            self._say(f"refused ({approval_id}): {asked(data)}: no terminal to ask in; --yes approves")
            await self._decide(approval_id, "deny", "once", NO_TERMINAL)

    async def _decide(self, approval_id: str, decision: Decision, remember: Remember, by: str) -> None:
        try:
            await self._hub.approval_service.answer_approval(approval_id, decision, remember, by=by)
        except UserError as error:  # answered meanwhile: auto-approved, or the agent stopped
            self._say(str(error))

    async def _prompt(self, data: ApprovalRequested) -> tuple[Decision, Remember] | None:
        """Ask until the answer is one of the choices; None when the terminal closed."""
        lines = [f"approval {data.approval_id}: {asked(data)}"]
        if data.kind == "path" and data.content:
            lines.append(f"  why: {data.content}")
        elif data.content:
            lines += _excerpt(data.content)
        self._console.print("\n".join(lines), markup=False, highlight=False)
        if data.diff:
            self._console.print(diff_text(data.diff), end="", highlight=False, soft_wrap=True)
        if data.auto_approve_at:
            self._console.print(
                f"  (approved by itself at {data.auto_approve_at} unless you answer)", markup=False, highlight=False
            )
        while True:
            self._console.print(
                "approve? [y] once  [s] for the session  [n] deny: ", end="", markup=False, highlight=False
            )
            line = await self._read_line()
            if line is None:
                return None
            choice = CHOICES.get(line.strip().lower())
            if choice is not None:
                return choice

    async def _read_line(self) -> str | None:
        """One line from the terminal, read as it comes (cancellable: no thread blocks on it)."""
        await anyio.wait_readable(self._stdin)
        raw = os.read(self._stdin, 4096)
        return raw.decode(errors="replace") if raw else None

    def _say(self, text: str) -> None:
        self._console.print(f"dispatch: {text}", markup=False, highlight=False, soft_wrap=True)
