"""The hub's access gate: every request an agent's tool servers make for a path (or the network, or
an unsandboxed command) is decided here, by the identity the agent's link was built with, before
the approvals broker (the user) sees it.

Order of the checks:

1. not an absolute path (nor a pseudo target: ``network``, ``$ command``): refused;
2. always denied (:class:`~dispatch.servers.sandbox.policy.DeniedPaths`): refused, nobody asked;
3. inside the project root: the agent's own grants decide (its read paths, its write scope), the
   user is not asked: a scope is what keeps siblings apart;
4. granted earlier this session to the agent or an ancestor (:class:`GrantStore`): granted;
5. covered by ``permissions.auto_allow``: granted;
6. otherwise the broker asks the user, naming the agent chain; a ``session`` or ``always`` answer is
   recorded for the agent *and each of its ancestors*, so that a child never holds a grant its
   parent lacks (the prompt says so by naming the chain).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.agents.loop import Agent
from dispatch.hub.policy.grants import covered_by_any
from dispatch.servers.hublink import AccessDecision, Operation
from dispatch.servers.sandbox.policy import DeniedPaths, is_pseudo_target

__all__ = ["Broker", "GateTree", "GrantStore", "StoredGrant", "chain_of", "gate_request"]


@dataclass(frozen=True)
class StoredGrant:
    target: str
    """An absolute resolved path, or a pseudo target (``network``, ``$ command``)."""
    operation: Operation
    granted_to: str
    """The id of the agent whose request the user answered."""

    def covers(self, target: str, operation: Operation) -> bool:
        if operation != self.operation and not (self.operation == "write" and operation == "read"):
            return False
        if is_pseudo_target(self.target) or is_pseudo_target(target):
            return target == self.target
        return target == self.target or Path(target).is_relative_to(self.target)


class GrantStore:
    """Grants the user gave this session, per agent id. Lives in the hub, never in a server."""

    def __init__(self) -> None:
        self._by_agent: dict[str, list[StoredGrant]] = {}

    def add(self, agent_ids: Iterable[str], grant: StoredGrant) -> None:
        for agent_id in agent_ids:
            held = self._by_agent.setdefault(agent_id, [])
            if grant not in held:
                held.append(grant)

    def covering(self, agent_ids: Iterable[str], target: str, operation: Operation) -> StoredGrant | None:
        for agent_id in agent_ids:
            for grant in self._by_agent.get(agent_id, []):
                if grant.covers(target, operation):
                    return grant
        return None


class Broker(Protocol):
    """The approvals broker (``dispatch.hub.agents.link.AccessBroker``): asks the user."""

    async def request_access(self, agent: Agent, path: str, operation: Operation, why: str) -> AccessDecision: ...


class GateTree(Protocol):
    """What the gate needs of the tree (``dispatch.hub.agents.tree.AgentTree`` provides it)."""

    @property
    def root(self) -> Path: ...
    @property
    def agents(self) -> dict[str, Agent]: ...
    @property
    def access(self) -> Broker | None: ...
    @property
    def catalog(self) -> Catalog: ...
    @property
    def grant_store(self) -> GrantStore: ...


def chain_of(agents: Mapping[str, Agent], agent: Agent) -> list[Agent]:
    """The agent, its parent, ... up to the top agent."""
    chain = [agent]
    while (parent_id := chain[-1].spec.parent_id) is not None and parent_id in agents:
        chain.append(agents[parent_id])
    return chain


def _auto_allowed(target: Path, entries: Sequence[str], root: Path) -> str | None:
    for entry in entries:
        expanded = Path(os.path.expanduser(entry))
        base = Path(os.path.realpath(expanded if expanded.is_absolute() else root / expanded))
        if target == base or target.is_relative_to(base):
            return entry
    return None


def _inside_root(agent: Agent, real: Path, root: Path, operation: Operation) -> AccessDecision:
    rel = real.relative_to(root).as_posix() if real != root else "."
    grants = agent.spec.grants
    paths, what = (grants.write, "write scope") if operation == "write" else (grants.read, "read paths")
    if covered_by_any(rel or ".", paths):
        return AccessDecision(granted=True, reason=f"inside the agent's {what}")
    listed = ", ".join(repr(p) for p in paths) or "none"
    return AccessDecision(
        granted=False,
        reason=f"'{rel}' is inside the project but outside this agent's {what} ({listed}); "
        "a scope is set when the agent is summoned, not by approval",
    )


def _by_rule(tree: GateTree, agent: Agent, path: str, operation: Operation) -> AccessDecision | str:
    """The decision the rules make without anyone's answer, or the resolved target to look up."""
    expanded = os.path.expanduser(path)
    if not os.path.isabs(expanded):
        return AccessDecision(granted=False, reason=f"{path!r} is not an absolute path")
    real = Path(os.path.realpath(expanded))
    refused = DeniedPaths.current(tree.root).reason(real)
    if refused is not None:
        return AccessDecision(granted=False, reason=refused)
    if real == tree.root or real.is_relative_to(tree.root):
        return _inside_root(agent, real, tree.root, operation)
    entry = _auto_allowed(real, tree.catalog.config.permissions.auto_allow, tree.root)
    if entry is not None:
        return AccessDecision(granted=True, remember="always", reason=f"permissions.auto_allow: {entry}")
    return str(real)


async def gate_request(tree: GateTree, agent: Agent, path: str, operation: Operation, why: str) -> AccessDecision:
    """Decide ``agent``'s request for ``operation`` on ``path`` (see the module docstring)."""
    if is_pseudo_target(path):
        target = path
    else:
        settled = _by_rule(tree, agent, path, operation)
        if isinstance(settled, AccessDecision):
            return settled
        target = settled
    chain = chain_of(tree.agents, agent)
    earlier = tree.grant_store.covering([a.id for a in chain], target, operation)
    if earlier is not None:
        return AccessDecision(granted=True, remember="session", reason=f"granted this session to {earlier.granted_to}")
    broker = tree.access
    if broker is None:
        return AccessDecision(
            granted=False,
            reason=f"{operation} access to {path!r} is outside this agent's grants, and this run has no "
            "approvals (start it under `dispatch serve` to be asked)",
        )
    names = " › ".join(a.spec.name for a in reversed(chain))
    decision = await broker.request_access(agent, target, operation, f"{why} [asked by {names}]")
    if decision.granted and decision.remember in ("session", "always"):
        tree.grant_store.add([a.id for a in chain], StoredGrant(target, operation, agent.id))
    return decision
