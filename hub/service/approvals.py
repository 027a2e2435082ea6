"""Approvals: the user's yes or no to an agent, asked and enforced by the hub, never left to the model.

Two kinds. A **path** approval: an agent asks (``request_access`` through its ``TreeLink``) to
read, write or execute a path outside its grants. The hub's access gate (:mod:`dispatch.hub.agents.access`)
decides first (always-denied paths, the project root, the config's auto-allow list, grants of this
session); what it passes on is granted here without asking when it is under ``permissions.auto_allow``
as extended by ``always`` answers of this run, or when an answer of this session covers it (denials
too); otherwise the user is asked. A **checkpoint**: ``before_report``,
``before_write`` or ``before_destructive`` as the agent's spec sets it (:mod:`dispatch.hub.policy.checkpoints`),
held by the agent loop (its final answer) and by ``Mounts.call`` (the tool call) through the tree.

What an answer's ``remember`` means:

- ``once``: this request only.
- ``session``: for a path, the same operation on that path or anything beneath it, asked by any
  agent of the same agent tree (the asking agent's top agent and all its descendants), until this
  hub process stops; for a checkpoint, the same checkpoint of the same agent, for the rest of its
  run. A denial is remembered the same way: later requests are denied without asking.
- ``always``: an approved path is appended to ``permissions.auto_allow`` in the project config
  file ``<root>/.dispatch/config.yaml`` (any operation, any agent, later runs too); for a
  checkpoint, or a denial, it means ``session``.

A **notice** (:meth:`Approvals.notify`) is a third kind that holds no agent: the hub asks the user
about something agents go on without meanwhile (``tool_change``: an outside MCP server's tool list
changed since it was pinned, see :mod:`dispatch.hub.mounts.pins`); what an answer does is the
callback its owner put in :attr:`Approvals.on_answer` for that kind.

While it waits the agent is ``waiting_user`` with a reason; a checkpoint set to ``auto_approve``
is approved by the hub when its time runs out. Every approval is kept in the store and announced
(``approval.requested``, ``approval.resolved``) on the tree's event bus.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import anyio

from dispatch.hub.agents.loop import Agent
from dispatch.hub.agents.spec import AgentState
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.config.permissions import add_auto_allow, covering_entry, resolved
from dispatch.hub.errors import CheckpointDenied, NotFoundError, UserError
from dispatch.hub.events import ApprovalRequested, ApprovalResolved
from dispatch.hub.ids import new_id
from dispatch.hub.policy.checkpoints import CheckpointName, ToolCheckpoints
from dispatch.hub.store.db import Row, Store
from dispatch.hub.views import ApprovalView, Decision, Remember
from dispatch.servers.hublink import AccessDecision, Operation

STATES = ("pending", "approved", "denied")


def _is_path(target: str) -> bool:
    """An absolute path, not a pseudo target of the access gate (``network``, ``$ command``)."""
    return Path(os.path.expanduser(target)).is_absolute()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


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

    ``Approvals(store, tree)`` installs itself on ``tree`` as its access broker (``tree.access``)
    and checkpoint gate (``tree.checkpoints``); construct it before the tree starts agents.
    """

    def __init__(self, store: Store, tree: AgentTree) -> None:
        self._store = store
        self._tree = tree
        self.auto_allow: list[str] = list(tree.catalog.config.permissions.auto_allow)
        """The config's auto-allow list, plus the paths answered ``always`` in this run."""
        self._paths: dict[str, list[tuple[Path, Operation, bool]]] = {}
        self._remembered: dict[tuple[str, str], bool] = {}
        self._waiters: dict[str, _Waiter] = {}
        self._waiting: dict[str, int] = {}
        self._tools = ToolCheckpoints(tree.root)
        self.on_answer: dict[str, Callable[[str, bool], Awaitable[None]]] = {}
        """What answering a notice of a kind does: ``callback(approval_id, approved)``, after it is stored."""
        tree.access = self
        tree.checkpoints = self

    # ---- the agents' side ------------------------------------------------------------------------

    def chain(self, agent_id: str) -> list[Agent]:
        """The agents from the top one down to ``agent_id`` (those this hub run knows)."""
        found: list[Agent] = []
        agent = self._tree.agents.get(agent_id)
        while agent is not None:
            found.insert(0, agent)
            agent = self._tree.agents.get(agent.spec.parent_id) if agent.spec.parent_id else None
        return found

    def _top(self, agent_id: str) -> str:
        chain = self.chain(agent_id)
        return chain[0].id if chain else agent_id

    async def request_access(self, agent: Agent, path: str, operation: Operation, why: str) -> AccessDecision:
        """Grant or deny ``operation`` on ``path`` (outside the agent's grants), asking the user
        unless the auto-allow list or an answer of this session decides."""
        if _is_path(path):
            decided = self._decided(agent, path, operation)
            if decided is not None:
                return decided
        answer = await self._ask(
            agent, f"waiting for your approval: {operation} {path}", kind="path", path=path, operation=operation,
            content=why.strip() or None,
        )  # fmt: skip
        verb = "granted" if answer.approved else "denied"
        reason = f"{verb} by {answer.by} (approval {answer.approval_id})"
        return AccessDecision(granted=answer.approved, remember=answer.remember, reason=reason)

    def _decided(self, agent: Agent, path: str, operation: Operation) -> AccessDecision | None:
        """What the auto-allow list (as ``always`` answers extend it) or this session's answers
        decide, without asking; None when they leave it open."""
        entry = covering_entry(path, self.auto_allow, self._tree.root)
        if entry is not None:
            return AccessDecision(granted=True, reason=f"{path} is under {entry} in permissions.auto_allow")
        target = resolved(path, self._tree.root)
        for where, done, granted in self._paths.get(self._top(agent.id), []):
            if done == operation and (target == where or where in target.parents):
                verb = "granted" if granted else "denied"
                reason = f"{operation} on {where} was {verb} by the user for this session"
                return AccessDecision(granted=granted, remember="session", reason=reason)
        return None

    async def checkpoint(self, agent: Agent, name: CheckpointName, content: str) -> Answer | None:
        """Hold the agent at a checkpoint until it is approved or denied; None when it is off."""
        mode = agent.spec.checkpoints.get(name)
        if mode is None or not mode.enabled:
            return None
        remembered = self._remembered.get((agent.id, name))
        if remembered is not None:
            return Answer("(remembered)", remembered, "the user, for this session")
        reason = f"waiting for your approval at checkpoint {name}"
        return await self._ask(agent, reason, kind="checkpoint", checkpoint=name, content=content, after_s=mode.after_s)

    async def before_report(self, agent: Agent, report: str) -> None:
        """The ``before_report`` checkpoint; raises CheckpointDenied when the report is denied."""
        answer = await self.checkpoint(agent, "before_report", report)
        if answer is not None and not answer.approved:
            raise CheckpointDenied(
                f"checkpoint before_report: the report was denied by {answer.by} (approval {answer.approval_id})"
            )

    async def before_tool(self, agent: Agent, kind: str, name: str, arguments: dict[str, Any]) -> str | None:
        """The ``before_write`` / ``before_destructive`` checkpoint of one tool call: None to run
        it, or why it is refused (the model reads that as the call's error result)."""
        enabled = {n for n, m in agent.spec.checkpoints.items() if m.enabled}
        held = self._tools.held(agent.id, enabled, kind, name, arguments)
        if held is None:
            return None
        checkpoint, content = held
        answer = await self.checkpoint(agent, checkpoint, content)
        if answer is None or answer.approved:
            if checkpoint == "before_destructive":
                self._tools.approved(agent.id)
            return None
        return (
            f"Error: refused by the hub: {name} was denied at checkpoint {checkpoint} by {answer.by} "
            f"(approval {answer.approval_id}); it did not run. Do not retry it; report what you could not do."
        )

    async def notify(self, agent_id: str, kind: str, **asked: Any) -> str:
        """Record a pending approval that holds no agent (the asking agent goes on meanwhile) and
        announce it; returns its id. Answering it calls ``on_answer[kind]``."""
        chain = [a.spec.name for a in self.chain(agent_id)] or [agent_id]
        row: Row = {"id": new_id("ap"), "agent_id": agent_id, "chain": json.dumps(chain), "kind": kind,
                    "created_at": _iso(datetime.now(UTC)), "state": "pending", **asked}  # fmt: skip
        await self._store.add_approval(row)
        self._tree.events.publish(agent_id, _requested(self._view(row)))
        return row["id"]

    async def _ask(self, agent: Agent, reason: str, *, after_s: float | None = None, **asked: Any) -> Answer:
        now = datetime.now(UTC)
        row: Row = {
            "id": new_id("ap"),
            "agent_id": agent.id,
            "chain": json.dumps([a.spec.name for a in self.chain(agent.id)] or [agent.spec.name]),
            "created_at": _iso(now),
            "auto_approve_at": _iso(now + timedelta(seconds=after_s)) if after_s is not None else None,
            "state": "pending",
            **asked,
        }
        await self._store.add_approval(row)
        waiter = self._waiters[row["id"]] = _Waiter(agent.id)
        self._tree.events.publish(agent.id, _requested(self._view(row)))
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
        fields: Row = {"state": state, "decided_at": _iso(datetime.now(UTC)), "decided_by": by, "remember": remember}
        await self._store.update_approval(approval_id, {**fields, "reason": why})
        resolved = ApprovalResolved(approval_id=approval_id, state=state, decided_by=by, remember=remember)
        self._tree.events.publish(waiter.agent_id, resolved)
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

    async def answer_approval(self, approval_id: str, decision: Decision, remember: Remember) -> ApprovalView:
        """Approve or deny a pending approval, remembering the answer as ``remember`` says."""
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
        await self._resolve(approval_id, waiter, approved, "the user", remember, f"{decision} ({remember})")
        callback = self.on_answer.get(row["kind"])
        if callback is not None:
            await callback(approval_id, approved)
        return self._view({**row, "state": "approved" if approved else "denied"})

    def _remember(self, row: Row, approved: bool, remember: Remember) -> None:
        if remember == "once" or row["kind"] not in ("path", "checkpoint"):
            return  # a notice: its owner's on_answer callback acts on the answer
        if row["kind"] == "checkpoint":
            self._remembered[(row["agent_id"], row["checkpoint"])] = approved
        elif not _is_path(row["path"]):  # a pseudo target ("network", "$ command"): this session only
            return  # the access gate keeps session grants; a denial of one is asked again
        elif approved and remember == "always":
            add_auto_allow(self._tree.root, row["path"])
            self.auto_allow.append(row["path"])
        else:
            target = resolved(row["path"], self._tree.root)
            self._paths.setdefault(self._top(row["agent_id"]), []).append((target, row["operation"], approved))

    async def close_stale(self) -> int:
        """Deny the approvals still pending from an earlier hub run (nobody waits on them any more);
        returns how many. The runtime calls this once at start."""
        stale = [r for r in await self._store.approval_rows("pending") if r["id"] not in self._waiters]
        for row in stale:
            waiter = _Waiter(row["agent_id"])
            await self._resolve(row["id"], waiter, False, "the hub", "once", "the hub stopped before an answer")
        return len(stale)
