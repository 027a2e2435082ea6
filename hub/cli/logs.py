"""``dispatch logs [AGENT] [-f]``: the activity log of the hub's agents, read from the events the
store keeps (so it works while a hub runs, after it stopped, and after it crashed).

One line per event: time, agent, what happened. Errors carry their context: the agent chain (names
from the top agent down), the tool and the arguments it was called with. Tracebacks are never
printed here; they are in ``hub.log`` in the data directory. ``-f`` keeps following new events.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from dispatch.hub.events import Event
from dispatch.hub.service.lifecycle import LOG_FILE
from dispatch.hub.store.db import DB_NAME, Store
from dispatch.hub.store.records import Records

POLL_S = 0.5


def _first(text: object, limit: int = 120) -> str:
    lines = str(text or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


class ActivityLog:
    """Turns events into lines, knowing the agents' names and parents and the tools' arguments."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.parents: dict[str, str | None] = {}
        self._arguments: dict[str, str] = {}

    def learn(self, agent_id: str, name: str, parent_id: str | None) -> None:
        self.names[agent_id], self.parents[agent_id] = name, parent_id

    def who(self, agent_id: str) -> str:
        return f"{self.names.get(agent_id, '?')}[{agent_id}]"

    def chain(self, agent_id: str) -> str:
        names: list[str] = []
        current: str | None = agent_id
        while current is not None and len(names) < 50:
            names.insert(0, self.who(current))
            current = self.parents.get(current)
        return " > ".join(names)

    def line(self, event: Event) -> str | None:
        data = event.data
        if event.type in ("agent.spawned", "agent.resumed"):
            self.learn(event.agent_id, str(data.get("name", "?")), data.get("parent_id"))
        text = self._text(event, data)
        if text is None:
            return None
        moment = datetime.fromtimestamp(event.at).strftime("%H:%M:%S")
        return f"{moment} #{event.seq} {self.who(event.agent_id)} {text}"

    def _text(self, event: Event, data: dict[str, Any]) -> str | None:
        render = _RENDER.get(event.type)
        if render is not None:
            return render(self, event, data)
        return f"{event.type} {_first(json.dumps(data, default=str))}"

    def state_text(self, event: Event, data: dict[str, Any]) -> str:
        reason = f" ({_first(data.get('reason'), 200)})" if data.get("reason") else ""
        if data.get("state") == "failed":
            return f"✗ failed{reason}\n    chain: {self.chain(event.agent_id)}"
        return f"{data.get('state')}{reason}"

    def tool_call_text(self, event: Event, data: dict[str, Any]) -> str:
        self._arguments[str(data.get("call_id"))] = str(data.get("arguments", ""))
        return f"→ {data.get('name')} {_first(data.get('arguments'))}"

    def tool_result_text(self, event: Event, data: dict[str, Any]) -> str:
        arguments = self._arguments.pop(str(data.get("call_id")), "")
        if not data.get("is_error"):
            return f"← {data.get('name')} ok: {_first(data.get('text'))}"
        return (
            f"✗ tool {data.get('name')} failed: {_first(data.get('text'), 300)}\n"
            f"    chain: {self.chain(event.agent_id)}\n    arguments: {_first(arguments, 500)}"
        )


_Render = Callable[[ActivityLog, Event, dict[str, Any]], "str | None"]
_RENDER: dict[str, _Render] = {
    "agent.spawned": lambda log, e, d: (
        f"spawned by {log.who(d['parent_id']) if d.get('parent_id') else 'the user'}: {_first(d.get('task'))}"
    ),
    "agent.resumed": lambda log, e, d: "resumed from its last step",
    "agent.state": ActivityLog.state_text,
    "agent.step": lambda log, e, d: (
        f"step {d.get('index')} ({d.get('tokens_in', 0)}+{d.get('tokens_out', 0)} tok)"
        + (f": {_first(d.get('text'))}" if d.get("text") else "")
    ),
    "tool.call": ActivityLog.tool_call_text,
    "tool.result": ActivityLog.tool_result_text,
    "message.sent": lambda log, e, d: (
        f"✉ {d.get('kind')} from {d.get('sender')} ({d.get('message_id')}): {_first(d.get('text'))}"
    ),
    "message.delivered": lambda log, e, d: f"✉ read {d.get('message_id')} at step {d.get('step')}",
    "agent.progress": lambda log, e, d: f"progress: {_first(d.get('text'), 200)}",
    "agent.question": lambda log, e, d: f"asks the user: {_first(d.get('question'), 200)}",
    "agent.report": lambda log, e, d: f"report: {_first(d.get('report'), 200)}",
    "agent.model": lambda log, e, d: f"model → {d.get('model')}",
    "agent.skill": lambda log, e, d: f"loaded skill {d.get('skill')}",
    "artifact.saved": lambda log, e, d: f"saved {d.get('kind')} {d.get('title')!r} ({d.get('artifact_id')})",
}


async def _pick(records: Records, log: ActivityLog, agent: str | None) -> list[str] | None:
    """Learn every agent's name; the ids whose events to show (None: all). Raises LookupError."""
    rows = await records.agent_rows()
    for row in rows:
        log.learn(row.id, row.spec.name, row.parent_id)
    if agent is None:
        return None
    matches = [row.id for row in rows if agent in (row.id, row.spec.name)]
    if len(matches) != 1:
        found = "no agent" if not matches else f"{len(matches)} agents ({', '.join(matches)})"
        raise LookupError(f"{found} with the id or name {agent!r}")
    return matches


async def _show(home: Path, agent: str | None, follow: bool, out: Callable[[str], None]) -> int:
    async with Store.open(home / DB_NAME) as store:
        records, log = Records(store), ActivityLog()
        try:
            wanted = await _pick(records, log, agent)
        except LookupError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        last = 0
        while True:
            page = await records.events_after(last, limit=1000, agent_ids=wanted)
            for event in page:
                line = log.line(event)
                if line is not None:
                    out(line)
                last = event.seq
            if len(page) == 1000:
                continue
            if not follow:
                return 0
            await anyio.sleep(POLL_S)
            if wanted is None:
                await _pick(records, log, None)  # names of agents spawned meanwhile


def logs_command(agent: str | None, *, follow: bool, home: Path) -> int:
    """Print the activity log (of one agent, by id or name); returns the exit code."""
    if not (home / DB_NAME).exists():
        print(f"error: no hub has kept state in {home} yet", file=sys.stderr)
        return 1

    def out(line: str) -> None:
        print(line, flush=True)

    try:
        code = anyio.run(_show, home, agent, follow, out)
    except KeyboardInterrupt:
        return 0
    if code == 0 and not follow:
        print(f"(tracebacks, if any, are in {home / LOG_FILE})", file=sys.stderr)
    return code
