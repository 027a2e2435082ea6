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

import anyio

from dispatch.hub.events import (
    AgentCompacted,
    AgentModelSwitched,
    AgentProgress,
    AgentQuestion,
    AgentReported,
    AgentResumed,
    AgentSpawned,
    AgentStateChanged,
    AgentStepped,
    ArtifactSaved,
    Event,
    MessageDelivered,
    MessageSent,
    SkillLoaded,
    ToolCalled,
    ToolReturned,
)
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

    def line(self, event: Event) -> str:
        if isinstance(event.data, AgentSpawned | AgentResumed):
            self.learn(event.agent_id, event.data.name, event.data.parent_id)
        text = self._text(event)
        moment = datetime.fromtimestamp(event.at).strftime("%H:%M:%S")
        return f"{moment} #{event.seq} {self.who(event.agent_id)} {text}"

    def _text(self, event: Event) -> str:
        match event.data:
            case ToolCalled(call_id=call_id, name=name, arguments=arguments):
                self._arguments[call_id] = arguments
                return f"→ {name} {_first(arguments)}"
            case ToolReturned() as returned:
                return self._tool_result_text(event.agent_id, returned)
            case MessageSent(kind=kind, sender=sender, message_id=message_id, text=text):
                return f"✉ {kind} from {sender} ({message_id}): {_first(text)}"
            case MessageDelivered(message_id=message_id, step=step):
                return f"✉ read {message_id} at step {step}"
            case ArtifactSaved(kind=kind, title=title, artifact_id=artifact_id):
                return f"saved {kind} {title!r} ({artifact_id})"
            case _:
                return self._agent_text(event)

    def _agent_text(self, event: Event) -> str:
        match event.data:
            case AgentSpawned(parent_id=parent, task=task):
                return f"spawned by {self.who(parent) if parent else 'the user'}: {_first(task)}"
            case AgentResumed():
                return "resumed from its last step"
            case AgentStateChanged(state=state, reason=reason):
                because = f" ({_first(reason, 200)})" if reason else ""
                if state == "failed":
                    return f"✗ failed{because}\n    chain: {self.chain(event.agent_id)}"
                return f"{state}{because}"
            case AgentStepped(index=index, tokens_in=tokens_in, tokens_out=tokens_out, text=text):
                return f"step {index} ({tokens_in}+{tokens_out} tok)" + (f": {_first(text)}" if text else "")
            case AgentProgress(text=text):
                return f"progress: {_first(text, 200)}"
            case AgentQuestion(question=question):
                return f"asks the user: {_first(question, 200)}"
            case AgentReported(report=report):
                return f"report: {_first(report, 200)}"
            case AgentModelSwitched(model=model):
                return f"model → {model}"
            case AgentCompacted(tokens_before=before, tokens_after=after, model=model):
                how = f"older turns summarised by {model}" if model else "old tool results cut short"
                return f"compacted its context: {before} → {after} tokens ({how})"
            case SkillLoaded(skill=skill):
                return f"loaded skill {skill}"
            case _:  # approvals, and kinds of another version: as stored
                return f"{event.type} {_first(json.dumps(event.model_dump(mode='json')['data']))}"

    def _tool_result_text(self, agent_id: str, returned: ToolReturned) -> str:
        arguments = self._arguments.pop(returned.call_id, "")
        if not returned.is_error:
            return f"← {returned.name} ok: {_first(returned.text)}"
        return (
            f"✗ tool {returned.name} failed: {_first(returned.text, 300)}\n"
            f"    chain: {self.chain(agent_id)}\n    arguments: {_first(arguments, 500)}"
        )


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
                out(log.line(event))
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
