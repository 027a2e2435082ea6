"""``dispatch run``: one top agent on one task, shown live in the terminal, to completion.

The run is a hub of its own, opened as every command opens one (:meth:`Hub.open`: the data
directory's lock, store, journal, approvals, pins, limits), without an HTTP server: its agents are
journaled (``dispatch logs`` shows them, ``dispatch resume`` continues one a kill left
``interrupted``, their usage is in the ledger), and its approvals are answered in the terminal
(:mod:`dispatch.hub.cli.terminal_approvals`). SIGINT or SIGTERM stops it as it stops a served hub:
the run stops at once (a model call in flight is dropped), what is left is ``interrupted``, resumable.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
from rich.console import Console

from dispatch.hub.agents.loop import Agent
from dispatch.hub.agents.spec import AgentSpec, AgentState
from dispatch.hub.cli.live_view import Screen
from dispatch.hub.cli.terminal_approvals import Policy, TerminalApprovals
from dispatch.hub.errors import UserError, unwrap
from dispatch.hub.events import AgentStateChanged, Event
from dispatch.hub.heap import settle_heap
from dispatch.hub.llm.types import Usage
from dispatch.hub.service.hub import Hub
from dispatch.hub.service.lifecycle import HubRunning, serve_until_signalled

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130
LAST_EVENT_WAIT_S = 2.0
"""How long the finished run waits for its top agent's last event to be shown (or, with ``--jsonl``, printed)."""

Output = Literal["text", "json", "jsonl"]
"""What stdout gets: the report (with the live view on stderr), one JSON summary, or JSON lines."""


def summary(hub: Hub, top: Agent) -> dict[str, Any]:
    """The run as one JSON-ready object: the report, every agent (as the API's ``AgentView`` has it,
    with its ``usage``), and the token usage."""
    total = Usage()
    agents: list[dict[str, Any]] = []
    for agent in hub.tree.agents.values():
        total.add(agent.usage)
        agents.append({**hub.view(agent.id).model_dump(mode="json"), "usage": agent.usage.model_dump()})
    return {
        "id": top.id,
        "state": top.state.value,
        "reason": top.reason,
        "report": top.report,
        "error": top.error,
        "agents": agents,
        "usage": total.model_dump(),
    }


@dataclass(frozen=True)
class Outcome:
    """How the run ended, taken before the hub closes."""

    top_id: str
    state: AgentState
    text: str
    summary: dict[str, Any]


def _policy(yes: bool, interactive: bool) -> Policy:
    return "yes" if yes else "ask" if interactive else "refuse"


def _is_last(event: Event, top_id: str) -> bool:
    """The top agent's state change to where a run ends (``interrupted`` too: the run stops there)."""
    data = event.data
    ended = {*(s.value for s in AgentState if s.terminal), AgentState.interrupted.value}
    return event.agent_id == top_id and isinstance(data, AgentStateChanged) and data.state in ended


async def _run(spec: AgentSpec, root: Path, output: Output, yes: bool) -> Outcome:
    console = Console(stderr=True)
    terminal = sys.stdin.isatty()
    interactive = terminal and output == "text"
    mode = "jsonl" if output == "jsonl" else "quiet" if output == "json" else "live" if console.is_terminal else "lines"
    streamed = mode in ("live", "jsonl")  # the live view and --jsonl show answers and output as they stream
    async with Hub.open(root) as hub, hub.follow_events(ephemeral=streamed) as shown, hub.follow_events() as asked:
        settle_heap()
        top = await hub.launch(spec)
        say = f"run {top.id} is kept in {hub.data_dir}: `dispatch logs {top.id}` shows it"
        console.print(
            f"dispatch: {say}; if it stops, `dispatch resume {top.id}` continues it",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        with Screen(hub.tree, console, mode) as screen:
            desk = TerminalApprovals(hub, _policy(yes, interactive), console, screen.paused, terminal=interactive)

            shown_last = anyio.Event()

            async def until_done() -> None:
                async with anyio.create_task_group() as group:

                    async def show() -> None:
                        async for event in shown:
                            screen.feed(event)
                            if _is_last(event, top.id):
                                shown_last.set()

                    group.start_soon(show)
                    group.start_soon(desk.follow, asked)
                    await top.finished.wait()
                    # the top agent's final state is the live view's last line (with --jsonl, it
                    # comes before the result line): its event may still be on its way
                    with anyio.move_on_after(LAST_EVENT_WAIT_S):
                        await shown_last.wait()
                    group.cancel_scope.cancel()

            # Ctrl-C stops a run at once: its steps so far are kept, the rest resumes from them.
            await serve_until_signalled(hub, serve=until_done, deadline_s=0.0)
        done = top.state is AgentState.done
        text = (top.report or "") if done else (top.error or top.reason or top.state.value)
        return Outcome(top.id, top.state, text, summary(hub, top))


def run_task(spec: AgentSpec, *, root: Path, output: Output = "text", yes: bool = False) -> int:
    """Run the top agent of ``spec`` (built and checked by the command: template, skills, model and
    its key); print the report (or the JSON summary, or the events and a result line); return the
    exit code. A data directory another hub holds (``dispatch serve``) returns ``EXIT_USAGE``,
    naming it."""
    try:
        outcome = anyio.run(_run, spec, root, output, yes)
    except Exception as raised:
        error = unwrap(raised)
        if not isinstance(error, UserError):
            raise
        hint = ""
        if isinstance(error, HubRunning):  # one hub per data directory: a run is a hub
            hint = "; or give the task to the running hub (its web UI, or `dispatch mcp`)"
        print(f"error: {error}{hint}", file=sys.stderr)
        return EXIT_USAGE
    if output == "json":
        print(json.dumps(outcome.summary, indent=2))
    elif output == "jsonl":
        print(json.dumps({"type": "result", **outcome.summary}), flush=True)
    elif outcome.state is AgentState.done:
        print(outcome.text)
    elif outcome.state is AgentState.interrupted:
        print(
            f"stopped: {outcome.top_id} is interrupted; `dispatch resume {outcome.top_id}` continues it",
            file=sys.stderr,
        )
    else:
        print(f"error: {outcome.text}", file=sys.stderr)
    if outcome.state is AgentState.done:
        return EXIT_OK
    return EXIT_CANCELLED if outcome.state in (AgentState.cancelled, AgentState.interrupted) else EXIT_FAILED
