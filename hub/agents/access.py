"""The hub's access gate: every request an agent's tool servers make for a path (or the network, or
an unsandboxed command) is decided here, by the identity the agent's link was built with, before
the approvals broker (the user) sees it.

Order of the checks:

1. not an absolute path (nor a pseudo target: ``network``, ``$ command``): refused;
2. always denied (:class:`~dispatch.servers.sandbox.policy.DeniedPaths`): refused, nobody asked;
3. inside the project root: the agent's own grants decide (its read paths, its write scope), the
   user is not asked: a scope is what keeps siblings apart;
4. covered by ``permissions.auto_allow``, or by a path answered ``always`` earlier in this run:
   granted;
5. answered ``session`` earlier in its agent tree (:class:`SessionAnswers`): granted or denied as
   then;
6. otherwise the broker asks the user, naming the agent chain, and the answer is kept as its
   ``remember`` says (:meth:`SessionAnswers.keep`).

An answer of this session holds for the asking agent's whole agent tree (its top agent and every
descendant): the chain of a child always includes its ancestors, so a child never holds a grant
its parent lacks, and the prompt says so by naming the chain.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dispatch.hub.agents.loop import Agent
from dispatch.hub.agents.projects import Project
from dispatch.hub.agents.spec import AgentSpec
from dispatch.hub.config.permissions import covering_entry
from dispatch.hub.policy.paths import ROOT, covered_by_any
from dispatch.servers import paths
from dispatch.servers.hublink import AccessDecision, Operation
from dispatch.servers.sandbox.policy import DeniedPaths, is_pseudo_target

__all__ = ["AccessBroker", "GateTree", "SessionAnswer", "SessionAnswers", "chain_of", "gate_request"]


@dataclass(frozen=True)
class SessionAnswer:
    """One answer of the user kept for the rest of the session."""

    target: str
    """An absolute resolved path, or a pseudo target (``network``, ``$ command``)."""
    operation: Operation
    granted: bool
    asked_by: str
    """The id of the agent whose request the user answered."""

    def covers(self, target: str, operation: Operation) -> bool:
        """Whether this answer decides ``operation`` on ``target``: the same target or one beneath
        it (a pseudo target: only itself), the same operation; a write grant covers reading too,
        a denial only its own operation."""
        wider = self.granted and self.operation == "write" and operation == "read"
        if operation != self.operation and not wider:
            return False
        if is_pseudo_target(self.target) or is_pseudo_target(target):
            return target == self.target
        return paths.covers(Path(self.target), Path(target))

    def reason(self) -> str:
        """Why a later request is decided by this answer, in words."""
        verb = "granted" if self.granted else "denied"
        return f"{verb} this session by the user ({self.operation} on {self.target}, asked for {self.asked_by})"


class SessionAnswers:
    """What the user answered this session, kept in the hub (never in a server): answers per agent
    tree (by its top agent's id), and the paths answered ``always``, which hold for every agent."""

    def __init__(self) -> None:
        self._by_tree: dict[str, list[SessionAnswer]] = {}
        self.always: list[str] = []
        """Paths answered ``always`` in this run, on top of the config's ``permissions.auto_allow``
        (the approvals add them to the project config file, for later runs)."""

    def keep(self, tree_id: str, answer: SessionAnswer, remember: str | None) -> None:
        """Keep ``answer`` as ``remember`` says: ``once`` (or None), not at all; ``always`` for a granted
        path, for every agent tree; otherwise (``session``, or ``always`` for a denial or a pseudo
        target) for this agent tree. A denial of a pseudo target is not kept: it is asked again."""
        pseudo = is_pseudo_target(answer.target)
        if remember in (None, "once") or (pseudo and not answer.granted):
            return
        if answer.granted and remember == "always" and not pseudo:
            if answer.target not in self.always:
                self.always.append(answer.target)
            return
        kept = self._by_tree.setdefault(tree_id, [])
        if answer not in kept:
            kept.append(answer)

    def recall(self, tree_id: str, target: str, operation: Operation) -> SessionAnswer | None:
        """The answer that decides ``operation`` on ``target`` in this agent tree (a grant before
        a denial), or None when the user must be asked."""
        covering = [a for a in self._by_tree.get(tree_id, ()) if a.covers(target, operation)]
        return next((a for a in covering if a.granted), None) or next(iter(covering), None)


class AccessBroker(Protocol):
    """Whoever answers an agent's request for a path outside its grants (the hub's approvals,
    :mod:`dispatch.hub.service.approvals`): asks the user."""

    async def request_access(self, agent: Agent, path: str, operation: Operation, why: str) -> AccessDecision: ...


class GateTree(Protocol):
    """What the gate needs of the tree (``dispatch.hub.agents.tree.AgentTree`` provides it)."""

    @property
    def agents(self) -> dict[str, Agent]: ...
    @property
    def access(self) -> AccessBroker | None: ...
    @property
    def session_answers(self) -> SessionAnswers: ...
    def project_of(self, spec: AgentSpec) -> Project: ...


def chain_of(agents: Mapping[str, Agent], agent: Agent) -> list[Agent]:
    """The agent, its parent, ... up to the top agent."""
    chain = [agent]
    while (parent_id := chain[-1].spec.parent_id) is not None and parent_id in agents:
        chain.append(agents[parent_id])
    return chain


def _inside_root(agent: Agent, real: Path, root: Path, operation: Operation) -> AccessDecision:
    rel = real.relative_to(root).as_posix() if real != root else ROOT
    grants = agent.spec.grants
    allowed, what = (
        (grants.write, "write scope") if operation == "write" else ((*grants.read, *grants.write), "read paths")
    )
    if covered_by_any(rel, allowed):
        return AccessDecision(granted=True, reason=f"inside the agent's {what}")
    listed = ", ".join(repr(p) for p in allowed) or "none"
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
    project = tree.project_of(agent.spec)
    refused = DeniedPaths.current(project.root).reason(real, operation)
    if refused is not None:
        return AccessDecision(granted=False, reason=refused)
    if paths.covers(project.root, real):
        return _inside_root(agent, real, project.root, operation)
    entries = [*project.catalog.config.permissions.auto_allow, *tree.session_answers.always]
    entry = covering_entry(str(real), entries, project.root)
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
    tree_id = chain[-1].id
    earlier = tree.session_answers.recall(tree_id, target, operation)
    if earlier is not None:
        return AccessDecision(granted=earlier.granted, remember="session", reason=earlier.reason())
    broker = tree.access
    if broker is None:
        return AccessDecision(
            granted=False,
            reason=f"{operation} access to {path!r} is outside this agent's grants, and this run has no "
            "approvals (start it under `dispatch serve` to be asked)",
        )
    names = " › ".join(a.spec.name for a in reversed(chain))
    decision = await broker.request_access(agent, target, operation, f"{why} [asked by {names}]")
    answer = SessionAnswer(target, operation, decision.granted, agent.id)
    tree.session_answers.keep(tree_id, answer, decision.remember)
    return decision
