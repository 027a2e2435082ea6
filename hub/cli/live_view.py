"""The terminal's picture of a run: the agent tree with states, the latest tool calls, and what
is being written right now.

Drawn with rich from the tree's events: a live-updating tree on a terminal, one plain line per
event otherwise (so logs and pipes stay readable). On a terminal the live view also follows the
ephemeral events, on one line: the agent written to last, with the latest line of its model's
answer as it streams (``model.delta``) or of its running command's output (``tool.output``),
until that step or result arrives; the plain lines leave them out. :class:`Screen` is the one a
run shows; it is paused while the user is asked something
(:mod:`dispatch.hub.cli.terminal_approvals`), so the question is never drawn over.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from collections.abc import Generator
from contextlib import contextmanager
from types import TracebackType
from typing import Literal, cast

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text
from rich.tree import Tree

from dispatch.hub.agents.loop import Agent
from dispatch.hub.agents.spec import AgentState
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.events import (
    AgentProgress,
    AgentSpawned,
    AgentStateChanged,
    AgentStepped,
    ApprovalResolved,
    Event,
    ModelDelta,
    ToolCalled,
    ToolOutput,
    ToolReturned,
)
from dispatch.hub.llm.model_process import model_process

STATE_STYLE: dict[AgentState, str] = {
    AgentState.pending: "dim",
    AgentState.running: "cyan",
    AgentState.waiting_key: "yellow",
    AgentState.waiting_disk: "red",
    AgentState.waiting_user: "magenta",
    AgentState.waiting_children: "blue",
    AgentState.done: "green",
    AgentState.failed: "red",
    AgentState.cancelled: "dim red",
    AgentState.interrupted: "yellow",
}


def agent_label(agent: Agent) -> Text:
    label = Text()
    label.append(f"{agent.spec.name} ", style="bold")
    label.append(f"[{agent.id}] ", style="dim")
    label.append(agent.state.value, style=STATE_STYLE[agent.state])
    if agent.reason and agent.state not in (AgentState.done, AgentState.running):
        label.append(f" ({agent.reason[:80]})", style="dim")
    label.append(f"  {agent.model}  {agent.usage.prompt_tokens}+{agent.usage.completion_tokens} tok", style="dim")
    if agent.spec.scope:
        label.append(f"  writes {', '.join(agent.spec.scope)}", style="dim")
    return label


def headline(text: str, width: int = 100) -> str:
    """A tool result's first meaningful line: a JSON object as ``key: value, ...`` on one line, else
    the first line with a letter or digit in it (not a lone ``{``)."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            value: object = json.loads(stripped)
        except ValueError:
            value = None
        if isinstance(value, dict):
            pairs = cast(dict[str, object], value).items()
            return ", ".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in pairs)[:width]
        if isinstance(value, list):
            return json.dumps(value, ensure_ascii=False)[:width]
    line = next((line for line in stripped.splitlines() if any(c.isalnum() for c in line)), "")
    return line.strip()[:width]


def describe(event: Event) -> str | None:
    """One line for the events worth a line; None for the rest."""
    who = event.agent_id
    match event.data:
        case AgentSpawned(name=name, parent_id=parent, task=task):
            return f"{who} spawned ({name}, parent {parent or '-'}): {task[:80]}"
        case AgentStateChanged(state=state, reason=reason):
            return f"{who} {state}{f' ({reason})' if reason else ''}"
        case ToolCalled(name=name, arguments=arguments):
            return f"{who} → {name} {arguments[:100]}"
        case ToolReturned(name=name, blocked=str() as blocked):
            return f"{who} ← {name} blocked by a PreToolUse hook (not run): {' '.join(blocked.split())[:300]}"
        case ToolReturned(name=name, is_error=is_error, text=text):
            first = headline(text)
            return f"{who} ← {name} {'error' if is_error else 'ok'}: {first}"
        case AgentProgress(text=text):
            return f"{who} progress: {text}"
        case ApprovalResolved(approval_id=approval_id, state=state, decided_by=by):
            return f"{who} approval {approval_id} {state} by {by}"
        case _:
            return None


LOADING = "loading the model library (litellm, a few seconds); the first model call waits for it"


class LoadingNotice:
    """A line saying the model worker is still loading, redrawn by every refresh of the live view
    (so it goes away when the worker is ready, without waiting for an event); empty otherwise."""

    def __rich__(self) -> Text:
        return Text(LOADING if model_process().loading else "", style="yellow")


WATCHED_CHARS = 400
"""How much of a streaming answer or a command's output the live view keeps (it shows one line)."""


def last_line(text: str, width: int = 100) -> str:
    """The last line of ``text`` with something in it, its end kept when too wide."""
    line = next((line for line in reversed(text.splitlines()) if line.strip()), "").strip()
    return line if len(line) <= width else "…" + line[-(width - 1) :]


class LiveView:
    """Keeps the recent tool activity and what is being written, and draws the tree."""

    def __init__(self, tree: AgentTree, recent: int = 8) -> None:
        self._tree = tree
        self._recent: deque[str] = deque(maxlen=recent)
        self._writing: dict[str, tuple[str, str]] = {}
        """Per agent writing now: what (``model`` or the tool's name) and the tail of it."""

    def feed(self, event: Event) -> None:
        who = event.agent_id
        match event.data:
            case ModelDelta(text=text, tool=tool):
                self._stream(who, "model" if tool is None else f"model → {tool}", text)
            case ToolOutput(name=name, text=text):
                self._stream(who, name, text)
            case AgentStepped() | ToolReturned():
                self._writing.pop(who, None)
            case _:
                pass
        if isinstance(event.data, ToolCalled | ToolReturned | AgentProgress):
            line = describe(event)
            if line is not None:
                self._recent.append(line)

    def _stream(self, agent_id: str, what: str, text: str) -> None:
        was, tail = self._writing.pop(agent_id, (what, ""))
        tail = (tail if was == what else "") + text
        self._writing[agent_id] = (what, tail[-WATCHED_CHARS:])  # last in: the one watched

    def watched(self) -> str | None:
        """The line for the agent written to last: its name, what it writes and the latest of it."""
        if not self._writing:
            return None
        agent_id, (what, tail) = next(reversed(self._writing.items()))
        agent = self._tree.agents.get(agent_id)
        name = agent.spec.name if agent is not None else agent_id
        return f"{name} [{agent_id}] {what} ✎ {last_line(tail)}"

    def _branch(self, node: Tree, agent: Agent) -> None:
        for child in self._tree.children_of(agent.id):
            self._branch(node.add(agent_label(child)), child)

    def render(self) -> RenderableType:
        roots = [a for a in self._tree.agents.values() if a.spec.parent_id is None]
        parts: list[RenderableType] = []
        for agent in roots:
            node = Tree(agent_label(agent))
            self._branch(node, agent)
            parts.append(node)
        if self._recent:
            parts.append(Text("\n".join(self._recent), style="dim"))
        watched = self.watched()
        if watched is not None:
            parts.append(Text(watched, style="italic", no_wrap=True, overflow="ellipsis"))
        parts.append(LoadingNotice())
        return Group(*parts)


def print_line(console: Console, event: Event) -> None:
    line = describe(event)
    if line is not None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)  # one line, however wide


ScreenMode = Literal["live", "lines", "quiet", "jsonl"]


class Screen:
    """Where a run is shown: ``live``, the tree redrawn in place (a terminal); ``lines``, one line
    per event; ``quiet``, nothing (``--json``); ``jsonl``, each event as the JSON line of
    ``/api/events`` on stdout, flushed at once (``--jsonl``). A tool call a hook blocked is one
    line on the console (stderr) in every mode. Enter it to start drawing."""

    def __init__(self, tree: AgentTree, console: Console, mode: ScreenMode) -> None:
        self._view = LiveView(tree)
        self._console = console
        self._mode = mode
        self._live = self._drawing() if mode == "live" else None
        self._paused = False

    def _drawing(self) -> Live:
        return Live(self._view.render(), console=self._console, refresh_per_second=8)

    def __enter__(self) -> Screen:
        if self._live is not None:
            self._live.start()
        elif self._mode == "lines" and model_process().loading:
            self._console.print(LOADING, markup=False, highlight=False)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.update(self._view.render())
            self._live.stop()

    def feed(self, event: Event) -> None:
        if self._mode == "jsonl":
            sys.stdout.write(event.wire + "\n")
            sys.stdout.flush()
        elif self._mode == "lines":
            print_line(self._console, event)
        elif self._live is not None:
            self._view.feed(event)
            if not self._paused:
                self._live.update(self._view.render())
        if self._mode != "lines" and isinstance(event.data, ToolReturned) and event.data.blocked is not None:
            print_line(self._console, event)  # a blocked call is said on stderr whatever the mode

    @contextmanager
    def paused(self) -> Generator[None]:
        """Stop redrawing (what is drawn stays) while the terminal is the user's, then draw anew
        below (a new ``Live``: a restarted one would move up over the question to redraw)."""
        if self._live is None or self._paused:
            yield
            return
        self._paused = True
        self._live.stop()
        try:
            yield
        finally:
            self._paused = False
            self._live = self._drawing()
            self._live.start()
