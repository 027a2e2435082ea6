"""Approvals: the user's yes or no to an agent, asked and enforced by the hub, never left to the model.

Two kinds. A **path** approval: an agent asks (``request_access`` through its ``TreeLink``) to
read, write or execute a path outside its grants. The hub's access gate (:mod:`dispatch.hub.agents.access`)
decides first (always-denied paths, the project root, ``permissions.auto_allow`` and the ``always``
answers of this run, the answers of this session, which it keeps); what it passes on is asked of
the user here. A **checkpoint**: ``before_report``, ``before_write``, ``before_destructive`` or
``before_merge`` as the agent's spec sets it (:mod:`dispatch.hub.policy.checkpoints`),
held by the agent loop (its final answer), by ``Mounts.call`` (the tool call) and by the tree (an
isolated child's merge, its whole diff shown) through the tree.

What an answer's ``remember`` means:

- ``once``: this request only.
- ``session``: for a path, the same operation on that path or anything beneath it (a granted
  write covers reading too), asked by any agent of the same agent tree (the asking agent's top
  agent and all its descendants), until this hub process stops; for a checkpoint, the same
  checkpoint of the same agent, for the rest of its run. A denial of a path is remembered the
  same way: later requests are denied without asking (a denied network or command is asked again).
- ``always``: an approved path is appended to ``permissions.auto_allow`` in the project config
  file ``<root>/.dispatch/config.yaml`` (any operation, any agent, later runs too); for a
  checkpoint, a denial, or the network or a command, it means ``session``.

A **notice** (:meth:`Approvals.notify`) is a third kind that holds no agent: the hub asks the user
about something agents go on without meanwhile (``tool_change``: an outside MCP server's tool list
changed since it was pinned, see :mod:`dispatch.hub.mounts.pins`); what an answer does is the
callback its owner gave :meth:`Approvals.notify` with it.

While it waits the agent is ``waiting_user`` with a reason; a checkpoint set to ``auto_approve``
is approved by the hub when its time runs out. Every approval is kept in the store and announced
(``approval.requested``, ``approval.resolved``) on the tree's event bus.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import anyio
import anyio.to_thread

from dispatch.hub import times
from dispatch.hub.agents.loop import Agent
from dispatch.hub.agents.spec import AgentState
from dispatch.hub.changes.proposed import bounded, proposed_diff
from dispatch.hub.config.permissions import add_auto_allow
from dispatch.hub.errors import CheckpointDenied, NotFoundError, UserError
from dispatch.hub.events import ApprovalRequested, ApprovalResolved, EventBus
from dispatch.hub.ids import new_id
from dispatch.hub.policy.checkpoints import CheckpointName, ToolCheckpoints
from dispatch.hub.policy.servers import FS
from dispatch.hub.store.db import Row, Store
from dispatch.hub.views import ApprovalView, Decision, Remember
from dispatch.servers.hublink import AccessDecision, Operation
from dispatch.servers.sandbox.policy import is_pseudo_target

STATES = ("pending", "approved", "denied")


def _requested(view: ApprovalView) -> ApprovalRequested:
    return ApprovalRequested(
        approval_id=view.id,
        kind=view.kind,
        chain=view.chain,
        path=view.path,
        operation=view.operation,
        checkpoint=view.checkpoint,
        server=view.server,
        content=view.content,
        diff=view.diff,
        created_at=view.created_at,
        auto_approve_at=view.auto_approve_at,
    )


@dataclass
class _Waiter:
    """One approval an agent waits on, and its answer once there is one."""

    agent_id: str
    done: anyio.Event = field(default_factory=anyio.Event)
    approved: bool | None = None
    by: str = ""
    remember: Remember = "once"


@dataclass(frozen=True)
class Answer:
    """How an approval ended: approved or not, by whom (``the user``, ``auto_approve``, ...)."""

    approval_id: str
    approved: bool
    by: str
    remember: Remember = "once"


class Approvals:
    """The approvals of one hub.

    Build it before the tree and give it to the tree as its access broker and checkpoint gate
    (``AgentTree(..., access=approvals, checkpoints=approvals, agents=agents)``): ``agents`` is
    the tree's live agents by id (the dict the tree is given), read for the asking agent's chain;
    ``events`` the tree's bus, where requests and answers are announced.
    """

    def __init__(self, store: Store, events: EventBus, *, root: Path, agents: Mapping[str, Agent]) -> None:
        self._store = store
        self._events = events
        self._root = root
        self._agents = agents
        self._remembered: dict[tuple[str, str], bool] = {}
        self._waiters: dict[str, _Waiter] = {}
        self._waiting: dict[str, int] = {}
        self._tools = ToolCheckpoints(root)
        self._on_answer: dict[str, Callable[[str, bool], Awaitable[None]]] = {}
        """What answering each notice does (given to :meth:`notify`), by approval id."""

    # ---- the agents' side ------------------------------------------------------------------------

    def chain(self, agent_id: str) -> list[Agent]:
        """The agents from the top one down to ``agent_id`` (those this hub run knows)."""
        found: list[Agent] = []
        agent = self._agents.get(agent_id)
        while agent is not None:
            found.insert(0, agent)
            agent = self._agents.get(agent.spec.parent_id) if agent.spec.parent_id else None
        return found

    async def request_access(self, agent: Agent, path: str, operation: Operation, why: str) -> AccessDecision:
        """Ask the user to grant or deny ``operation`` on ``path`` (outside the agent's grants; the
        access gate asks only what no rule or earlier answer decides)."""
        answer = await self._ask(
            agent, f"waiting for your approval: {operation} {path}", kind="path", path=path, operation=operation,
            content=why.strip() or None,
        )  # fmt: skip
        verb = "granted" if answer.approved else "denied"
        reason = f"{verb} by {answer.by} (approval {answer.approval_id})"
        return AccessDecision(granted=answer.approved, remember=answer.remember, reason=reason)

    async def checkpoint(
        self, agent: Agent, name: CheckpointName, content: str, *, diff: str | None = None
    ) -> Answer | None:
        """Hold the agent at a checkpoint until it is approved or denied; None when it is off.
        ``content`` is what the user reads (a plan, a one-line summary); ``diff``, when the
        checkpoint is about changing files, the unified diff of the change (shown coloured)."""
        mode = agent.spec.checkpoints.get(name)
        if mode is None or not mode.enabled:
            return None
        remembered = self._remembered.get((agent.id, name))
        if remembered is not None:
            return Answer("(remembered)", remembered, "the user, for this session")
        reason = f"waiting for your approval at checkpoint {name}"
        return await self._ask(
            agent, reason, kind="checkpoint", checkpoint=name, content=content, diff=diff, after_s=mode.after_s
        )

    async def before_report(self, agent: Agent, report: str) -> None:
        """The ``before_report`` checkpoint; raises CheckpointDenied when the report is denied."""
        answer = await self.checkpoint(agent, "before_report", report)
        if answer is not None and not answer.approved:
            raise CheckpointDenied(
                f"checkpoint before_report: the report was denied by {answer.by} (approval {answer.approval_id})"
            )

    async def before_merge(self, agent: Agent, diff: str) -> str | None:
        """The ``before_merge`` checkpoint of an isolated child, showing its whole diff: None to
        merge its work into its parent's files, or why it is discarded."""
        files = len(re.findall(r"^diff --git ", diff, flags=re.M))
        summary = f"merge {files} changed file{'s' if files != 1 else ''} of {agent.spec.name} into its parent's files"
        answer = await self.checkpoint(agent, "before_merge", summary, diff=bounded(diff))
        if answer is None or answer.approved:
            return None
        return f"checkpoint before_merge: the merge was denied by {answer.by} (approval {answer.approval_id})"

    async def before_tool(self, agent: Agent, kind: str, name: str, arguments: dict[str, Any]) -> str | None:
        """The ``before_write`` / ``before_destructive`` checkpoint of one tool call: None to run
        it, or why it is refused (the model reads that as the call's error result)."""
        enabled = {n for n, m in agent.spec.checkpoints.items() if m.enabled}
        held = self._tools.held(agent.id, enabled, kind, name, arguments)
        if held is None:
            return None
        checkpoint, content = held
        diff = None
        if name in FS.write_tools and kind == FS.name:  # the write as a diff against the file as it is
            root = Path(agent.spec.root) if agent.spec.root else self._root
            diff = await anyio.to_thread.run_sync(proposed_diff, root, name, arguments)
        answer = await self.checkpoint(agent, checkpoint, content, diff=diff)
        if answer is None or answer.approved:
            if checkpoint == "before_destructive":
                self._tools.approved(agent.id)
            return None
        return (
            f"Error: refused by the hub: {name} was denied at checkpoint {checkpoint} by {answer.by} "
            f"(approval {answer.approval_id}); it did not run. Do not retry it; report what you could not do."
        )

    async def notify(
        self, agent_id: str, kind: str, on_answer: Callable[[str, bool], Awaitable[None]], **asked: Any
    ) -> str:
        """Record a pending approval that holds no agent (the asking agent goes on meanwhile) and
        announce it; returns its id. Answering it calls ``on_answer(approval_id, approved)``."""
        chain = [a.spec.name for a in self.chain(agent_id)] or [agent_id]
        row: Row = {"id": new_id("ap"), "agent_id": agent_id, "chain": json.dumps(chain), "kind": kind,
                    "created_at": times.now(), "state": "pending", **asked}  # fmt: skip
        await self._store.add_approval(row)
        self._on_answer[row["id"]] = on_answer
        self._events.publish(agent_id, _requested(self._view(row)))
        return row["id"]

    async def _ask(self, agent: Agent, reason: str, *, after_s: float | None = None, **asked: Any) -> Answer:
        now = times.now()
        row: Row = {
            "id": new_id("ap"),
            "agent_id": agent.id,
            "chain": json.dumps([a.spec.name for a in self.chain(agent.id)] or [agent.spec.name]),
            "created_at": now,
            "auto_approve_at": now + after_s if after_s is not None else None,
            "state": "pending",
            **asked,
        }
        await self._store.add_approval(row)
        waiter = self._waiters[row["id"]] = _Waiter(agent.id)
        self._events.publish(agent.id, _requested(self._view(row)))
        self._hold(agent, +1, reason)
        try:
            async with agent.hooks.idle():  # waiting on the user: the agent's running slot goes back meanwhile
                with anyio.move_on_after(after_s if after_s is not None else math.inf):
                    await waiter.done.wait()
            if waiter.approved is None:
                await self._resolve(row["id"], waiter, True, "auto_approve", "once", f"no answer within {after_s:g}s")
        finally:
            if waiter.approved is None:  # the agent stopped while it waited
                with anyio.CancelScope(shield=True):
                    await self._resolve(row["id"], waiter, False, "the hub", "once", "the agent stopped first")
            del self._waiters[row["id"]]
            self._hold(agent, -1, reason)
        return Answer(row["id"], bool(waiter.approved), waiter.by, waiter.remember)

    def _hold(self, agent: Agent, delta: int, reason: str) -> None:
        count = self._waiting[agent.id] = self._waiting.get(agent.id, 0) + delta
        if delta > 0:
            agent.set_state(AgentState.waiting_user, reason)
        elif count == 0 and agent.state is AgentState.waiting_user:
            agent.set_state(AgentState.running)

    async def _resolve(
        self, approval_id: str, waiter: _Waiter, approved: bool, by: str, remember: Remember, why: str
    ) -> None:
        waiter.approved, waiter.by, waiter.remember = approved, by, remember  # before any await: one answer wins
        state = "approved" if approved else "denied"
        fields: Row = {"state": state, "decided_at": times.now(), "decided_by": by, "remember": remember}
        await self._store.update_approval(approval_id, {**fields, "reason": why})
        resolved = ApprovalResolved(approval_id=approval_id, state=state, decided_by=by, remember=remember)
        self._events.publish(waiter.agent_id, resolved)
        waiter.done.set()

    # ---- the user's side -------------------------------------------------------------------------

    def _view(self, row: Row) -> ApprovalView:
        fields = {k: row.get(k) for k in ApprovalView.model_fields if k != "chain"}
        return ApprovalView.model_validate({**fields, "chain": json.loads(row["chain"])})

    async def approvals(self, state: str | None = "pending") -> list[ApprovalView]:
        """Approvals in one state (pending, approved, denied; None: all), oldest first."""
        if state is not None and state not in STATES:
            raise UserError(f"state: expected one of {', '.join(STATES)} (or none for all), got {state!r}")
        return [self._view(row) for row in await self._store.approval_rows(state)]

    async def answer_approval(
        self, approval_id: str, decision: Decision, remember: Remember, *, by: str = "the user"
    ) -> ApprovalView:
        """Approve or deny a pending approval, remembering the answer as ``remember`` says; ``by``
        is who answered, as the asking agent reads it (``denied by ...``)."""
        if decision not in get_args(Decision) or remember not in get_args(Remember):
            raise UserError(f"expected decision approve|deny and remember once|session|always, got {decision!r}, "
                            f"{remember!r}")  # fmt: skip
        row = await self._store.approval_row(approval_id)
        if row is None:
            raise NotFoundError(f"no approval has the id {approval_id!r}")
        waiter = self._waiters.get(approval_id)
        if row["state"] != "pending" or (waiter is not None and waiter.approved is not None):
            raise UserError(f"approval {approval_id} was answered already ({row['state']})")
        approved = decision == "approve"
        self._remember(row, approved, remember)
        waiter = waiter or _Waiter(row["agent_id"])
        await self._resolve(approval_id, waiter, approved, by, remember, f"{decision} ({remember})")
        callback = self._on_answer.pop(approval_id, None)
        if callback is not None:
            await callback(approval_id, approved)
        return self._view({**row, "state": "approved" if approved else "denied"})

    def _remember(self, row: Row, approved: bool, remember: Remember) -> None:
        """Keep a checkpoint's answer, and save an ``always`` path in the project config for later
        runs (the access gate keeps the answers about paths for this one); a notice's answer is
        its owner's ``on_answer`` callback's to act on."""
        if remember == "once":
            return
        if row["kind"] == "checkpoint":
            self._remembered[(row["agent_id"], row["checkpoint"])] = approved
        elif row["kind"] == "path" and approved and remember == "always" and not is_pseudo_target(row["path"]):
            add_auto_allow(self._root, row["path"])

    async def close_stale(self) -> int:
        """Deny the approvals still pending from an earlier hub run (nobody waits on them any more);
        returns how many. The runtime calls this once at start."""
        stale = [r for r in await self._store.approval_rows("pending") if r["id"] not in self._waiters]
        for row in stale:
            waiter = _Waiter(row["agent_id"])
            await self._resolve(row["id"], waiter, False, "the hub", "once", "the hub stopped before an answer")
        return len(stale)
