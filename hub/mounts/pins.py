"""Pinning outside MCP servers' tool lists, against tool poisoning.

Its room: deciding whether agents may see the tool list an outside server offers now. A tool
list's fingerprint is the SHA-256 of its canonical JSON: for every tool, sorted by name, its
``name``, ``description`` and ``input_schema`` (what the model reads; a changed description is a
changed list). The first time a server is mounted with a data directory its list is pinned (kept
in the store's ``tool_pins`` table). Later, a list with the same hash is mounted; a different one
is not: agents get none of that server's tools, their prompt says why, and the user is asked
through the hub's approvals (kind ``tool_change``, its content a readable diff of the two lists).
Approving pins the new list, and agents started after that get it; denying leaves the old pin (the
change is asked again when the hub next starts the server).

Without approvals (a tree built without a hub) a change is refused the same way and the note says
to approve it through the hub.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import anyio
from mcp_types import Tool

from dispatch.hub import times
from dispatch.hub.llm.types import JsonDict

__all__ = ["PinVerdict", "ToolPins", "tool_entries", "tools_diff", "tools_hash"]

PinState = Literal["pinned", "changed", "unpinned"]
KIND = "tool_change"
"""The approvals' kind for a changed tool list."""


def tool_entries(tools: Sequence[Tool]) -> list[JsonDict]:
    """What is pinned of a tool list: name, description and input schema of each, sorted by name."""
    entries = [{"name": t.name, "description": t.description or "", "input_schema": t.input_schema} for t in tools]
    return sorted(entries, key=lambda e: e["name"])


def tools_hash(entries: Sequence[JsonDict]) -> str:
    """The SHA-256 (hex) of the canonical JSON of ``entries``."""
    canonical = json.dumps(list(entries), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _render(entries: Sequence[JsonDict]) -> list[str]:
    lines: list[str] = []
    for entry in entries:
        lines.append(f"tool {entry['name']}")
        lines += [f"  description: {line}" for line in str(entry["description"]).splitlines() or [""]]
        schema = json.dumps(entry["input_schema"], sort_keys=True, indent=2, ensure_ascii=False)
        lines += [f"  input schema: {line}" for line in schema.splitlines()]
    return lines


def tools_diff(server: str, old: Sequence[JsonDict], new: Sequence[JsonDict]) -> str:
    """A readable account of what changed between two pinned-entry lists: tools added and removed,
    then a unified diff of every tool's name, description and input schema."""
    before, after = {e["name"] for e in old}, {e["name"] for e in new}
    head = [f"The tool list of outside MCP server {server!r} changed since you approved it."]
    if after - before:
        head.append(f"Added tools: {', '.join(sorted(after - before))}")
    if before - after:
        head.append(f"Removed tools: {', '.join(sorted(before - after))}")
    changed = sorted(n for n in before & after if _entry(old, n) != _entry(new, n))
    if changed:
        head.append(f"Changed tools: {', '.join(changed)}")
    diff = difflib.unified_diff(_render(old), _render(new), "approved", "offered now", n=2, lineterm="")
    return "\n".join([*head, "", *diff])


def _entry(entries: Sequence[JsonDict], name: str) -> JsonDict | None:
    return next((e for e in entries if e["name"] == name), None)


class PinStore(Protocol):
    """Where pins are kept (the hub's :class:`~dispatch.hub.store.db.Store`): one row per server,
    ``{server, hash, tools (JSON), pinned_at, approval_id}``."""

    async def tool_pin(self, server: str) -> dict[str, Any] | None: ...

    async def set_tool_pin(self, row: dict[str, Any]) -> None: ...


class ApprovalDesk(Protocol):
    """Where a change is put to the user (the hub's :class:`~dispatch.hub.service.approvals.Approvals`)."""

    async def notify(
        self, agent_id: str, kind: str, on_answer: Callable[[str, bool], Awaitable[None]], **asked: Any
    ) -> str:
        """Put a notice to the user; ``on_answer(approval_id, approved)`` once they answer it."""
        ...


@dataclass(frozen=True)
class PinVerdict:
    """Whether an agent may see a server's tool list now, and if not, what its prompt says."""

    state: PinState
    note: str | None = None
    """None: mount the tools; else the line for the agent's prompt saying why they are missing."""
    approval_id: str | None = None


@dataclass(frozen=True)
class _Change:
    approval_id: str | None
    digest: str
    entries: list[JsonDict]
    denied: bool = False


class ToolPins:
    """The pins of one data directory (its store) and the changes waiting on the user in this run."""

    def __init__(self, store: PinStore, approvals: ApprovalDesk | None = None) -> None:
        self._store = store
        self._approvals = approvals
        self._changes: dict[str, _Change] = {}
        self._lock = anyio.Lock()

    async def pinned(self, server: str) -> list[JsonDict] | None:
        """The pinned entries of ``server``; None when it was never pinned."""
        row = await self._store.tool_pin(server)
        return None if row is None else list(json.loads(row["tools"]))

    async def state(self, server: str) -> tuple[PinState, str | None]:
        """What the store and this run know, without starting anything: the state and the pending approval."""
        change = self._changes.get(server)
        if change is not None:
            return "changed", None if change.denied else change.approval_id
        return ("unpinned" if await self._store.tool_pin(server) is None else "pinned"), None

    async def review(self, server: str, tools: Sequence[Tool], agent_id: str) -> PinVerdict:
        """Pin a first-seen list, pass a pinned one, hold back a changed one (asking the user once)."""
        entries = tool_entries(tools)
        digest = tools_hash(entries)
        async with self._lock:  # two agents mounting at once ask once
            row = await self._store.tool_pin(server)
            if row is None:
                await self._pin(server, digest, entries, None)
                return PinVerdict("pinned")
            if row["hash"] == digest:
                self._changes.pop(server, None)
                return PinVerdict("pinned")
            change = self._changes.get(server)
            if change is None or change.digest != digest:
                change = await self._ask(server, list(json.loads(row["tools"])), digest, entries, agent_id)
        return PinVerdict("changed", self._note(server, change), None if change.denied else change.approval_id)

    async def _ask(
        self, server: str, old: list[JsonDict], digest: str, entries: list[JsonDict], agent_id: str
    ) -> _Change:
        approval_id = None
        if self._approvals is not None:
            diff = tools_diff(server, old, entries)
            approval_id = await self._approvals.notify(agent_id, KIND, self.answered, server=server, content=diff)
        change = self._changes[server] = _Change(approval_id, digest, entries)
        return change

    def _note(self, server: str, change: _Change) -> str:
        why = f"The outside MCP server {server!r} is not mounted for you: its tool list changed since the user "
        why += "approved it"
        if change.approval_id is None:
            tail = "; approve the change through the hub (dispatch serve, then its approvals) to use it."
        elif change.denied:
            tail = f", and the user denied the change (approval {change.approval_id})."
        else:
            tail = f", and the change waits for the user's approval (approval {change.approval_id})."
        return why + tail + " Do without its tools, or report that you need them."

    async def answered(self, approval_id: str, approved: bool) -> None:
        """The user's answer to a ``tool_change`` approval: approving pins the list it showed."""
        async with self._lock:
            for server, change in list(self._changes.items()):
                if change.approval_id != approval_id:
                    continue
                if approved:
                    await self._pin(server, change.digest, change.entries, approval_id)
                    del self._changes[server]
                else:
                    self._changes[server] = _Change(approval_id, change.digest, change.entries, denied=True)

    async def _pin(self, server: str, digest: str, entries: list[JsonDict], approval_id: str | None) -> None:
        row = {
            "server": server,
            "hash": digest,
            "tools": json.dumps(entries),
            "pinned_at": times.now(),
            "approval_id": approval_id,
        }
        await self._store.set_tool_pin(row)
