"""The hub side of one agent's ``HubLink``: what its inbox and summon servers may ask of the tree.

Every request is checked against the identity the link was built with: a summon is refused when
it (or the template it names, see :mod:`dispatch.hub.agents.catalog`) asks for more than the agent's own
grants, a budget (its own or its template's) beyond what the agent has left
(:mod:`dispatch.hub.agents.budgets`), a cap that is not a positive number, or a write scope that
overlaps a running sibling's (scopes are compared, and kept, resolved: :mod:`dispatch.hub.agents.scopes`);
``message_child``, ``cancel_child`` and ``wait`` only reach the agent's own children.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import anyio

from dispatch.hub.agents.access import AccessBroker, SessionAnswers, gate_request
from dispatch.hub.agents.budgets import child_budget_refusal
from dispatch.hub.agents.catalog import Catalog, request_caps, template_caps
from dispatch.hub.agents.loop import Agent
from dispatch.hub.agents.projects import Project
from dispatch.hub.agents.scopes import resolve_scope
from dispatch.hub.agents.spec import AgentSpec, AgentState
from dispatch.hub.changes.tracker import ChangeTracker
from dispatch.hub.config.skills import LoadedSkill
from dispatch.hub.errors import HookStopped, UserError
from dispatch.hub.events import (
    AgentProgress,
    AgentQuestion,
    ArtifactSaved,
    EventBus,
    MessageDelivered,
    SkillLoaded,
)
from dispatch.hub.policy.paths import covered_by_any, normalize_path, overlaps
from dispatch.hub.views import AgentChanges
from dispatch.servers.hublink import (
    AccessDecision,
    ArtifactInfo,
    ChangeSummary,
    ChildChanges,
    ChildInfo,
    FileChangeInfo,
    InboxMessage,
    LinkRefusal,
    MergeInfo,
    MessageKind,
    Operation,
    SkillInfo,
    SummonRequest,
    TemplateInfo,
    WaitOutcome,
)


class CheckpointGate(Protocol):
    """Whoever holds an agent at its checkpoints (the hub's approvals, :mod:`dispatch.hub.service.approvals`)."""

    async def before_report(self, agent: Agent, report: str) -> None:
        """Return to let the report through; raise ``CheckpointDenied`` to stop the agent."""
        ...

    async def before_tool(self, agent: Agent, kind: str, name: str, arguments: dict[str, Any]) -> str | None:
        """Return None to run the tool call, or the refusal the model reads instead of its result."""
        ...

    async def before_merge(self, agent: Agent, diff: str) -> str | None:
        """Return None to merge an isolated child's work (``diff``) into its parent's tree, or why not."""
        ...


class ArtifactShelf(Protocol):
    """Where agents' artifacts are kept and searched (the hub's store); the tree holds no SQL."""

    async def save(self, agent_id: str, kind: str, title: str, content: str) -> ArtifactInfo: ...
    async def find(self, query: str | None, kind: str | None, limit: int) -> list[ArtifactInfo]: ...
    async def get(self, artifact_id: str) -> ArtifactInfo | None: ...


class TreeOps(Protocol):
    """What a link needs of the tree (``dispatch.hub.agents.tree.AgentTree`` provides it)."""

    events: EventBus
    agents: dict[str, Agent]
    access: AccessBroker | None
    session_answers: SessionAnswers
    artifacts: ArtifactShelf | None

    changes: ChangeTracker | None
    merges: dict[str, MergeInfo]

    def project_of(self, spec: AgentSpec) -> Project: ...
    def children_of(self, agent_id: str) -> list[Agent]: ...
    def descendants(self, agent_id: str) -> Iterator[Agent]: ...
    def live_children(self, agent_id: str) -> list[Agent]: ...
    def start(self, spec: AgentSpec) -> Agent: ...
    async def isolate(self, spec: AgentSpec) -> AgentSpec: ...
    def put_message(self, agent_id: str, kind: MessageKind, text: str, *, sender: str = "user") -> str: ...
    def cancel(self, agent_id: str, reason: str = "cancelled") -> Agent: ...


def child_info(agent: Agent, merge: MergeInfo | None = None) -> ChildInfo:
    return ChildInfo(
        merge=merge,
        id=agent.id,
        name=agent.spec.name,
        state=agent.state.value,
        task=agent.spec.task,
        scope=list(agent.spec.scope),
        report=agent.report if agent.state is AgentState.done else agent.error or _why_cancelled(agent),
    )


def _why_cancelled(agent: Agent) -> str | None:
    """What stopped a cancelled agent, when more than a plain cancel (a hook's ``stopReason``)."""
    cancelled = agent.state is AgentState.cancelled and agent.reason not in ("", "cancelled")
    return agent.reason if cancelled else None


class TreeLink:
    """A ``HubLink`` bound to one agent of a tree."""

    def __init__(self, tree: TreeOps, agent: Agent) -> None:
        self._tree = tree
        self._agent = agent

    @property
    def agent_id(self) -> str:
        return self._agent.id

    @property
    def _catalog(self) -> Catalog:
        """The templates and skills of the agent's project (as its config files say now)."""
        return self._tree.project_of(self._agent.spec).catalog

    # ---- inbox ---------------------------------------------------------------------------------

    async def take_messages(self) -> list[InboxMessage]:
        try:
            taken = await self._agent.admit(self._agent.inbox.take())
        except HookStopped as stopped:  # raised in a tool call: its agent stops all the same
            self._tree.cancel(self._agent.id, str(stopped))
            raise
        for message in taken:
            delivered = MessageDelivered(message_id=message.id, step=self._agent.steps_taken)
            self._tree.events.publish(self._agent.id, delivered)
        return taken

    async def report_progress(self, text: str) -> None:
        self._agent.progress.append(text)
        self._tree.events.publish(self._agent.id, AgentProgress(text=text))

    async def ask_user(self, question: str) -> list[InboxMessage]:
        self._tree.events.publish(self._agent.id, AgentQuestion(question=question))
        self._agent.set_state(AgentState.waiting_user, f"waiting for you: {question}")
        try:
            async with self._agent.hooks.idle():
                await self._agent.inbox.not_empty()
        finally:
            self._agent.set_state(AgentState.running)
        return await self.take_messages()

    async def request_access(self, path: str, operation: Operation, why: str) -> AccessDecision:
        # by this link's agent, never a name from the model: always-denied, scope, grants, then the user
        return await gate_request(self._tree, self._agent, path, operation, why)

    # ---- children ------------------------------------------------------------------------------

    def _own_child(self, child_id: str) -> Agent:
        if child_id not in {c.id for c in self._tree.children_of(self._agent.id)}:
            raise LinkRefusal(f"{child_id!r} is not one of your children")
        return self._tree.agents[child_id]

    def _resolved(self, asked: list[str], what: str) -> dict[str, str]:
        """Each path resolved (symlinks followed) -> as asked (normalized); refused naming where a
        path leads when that is outside the root."""
        resolved: dict[str, str] = {}
        for path in asked:
            try:
                lexical = normalize_path(path)
                resolved.setdefault(resolve_scope(self._tree.project_of(self._agent.spec).root, lexical), lexical)
            except ValueError as error:
                raise LinkRefusal(f"{what}: {error}") from None
        return resolved

    def _check_scope(self, scope: list[str]) -> dict[str, str]:
        """The scope, each path resolved (symlinks followed) -> as asked: inside the root and inside
        this agent's own scope; refused naming the path and where it leads."""
        resolved = self._resolved(scope, "scope")
        own = self._agent.spec.scope
        for mine, asked in resolved.items():
            named = repr(asked) if asked == mine else f"{asked!r} (it resolves to {mine!r})"
            if asked != mine and not covered_by_any(mine, own):  # a plain path: the grants' check names it
                allowed = ", ".join(repr(p) for p in own) or "nothing"
                raise LinkRefusal(f"write scope {named} is outside your own write scope ({allowed})")
        return resolved

    def _check_siblings(self, resolved: dict[str, str], isolated: bool) -> None:
        """Refuse a scope overlapping a running sibling's, unless one of the two works in a
        worktree of its own (its writes cannot collide)."""
        if isolated:
            return
        for mine, asked in resolved.items():
            named = repr(asked) if asked == mine else f"{asked!r} (it resolves to {mine!r})"
            for sibling in self._tree.live_children(self._agent.id):
                if sibling.spec.isolation is not None:
                    continue
                for theirs in sibling.spec.scope:
                    if overlaps(mine, theirs):
                        raise LinkRefusal(
                            f"write scope {named} overlaps the scope {theirs!r} of running sibling "
                            f"{sibling.id} ({sibling.spec.name}); give children that run at the same "
                            f"time disjoint scopes, or summon one with isolation: worktree"
                        )

    async def summon(self, request: SummonRequest) -> str:
        parent = self._agent.spec
        try:
            request_caps(request).check()
        except UserError as error:
            raise LinkRefusal(str(error)) from None
        resolved = self._check_scope(request.scope)
        scope = tuple(resolved)
        if request.grants.read is not None:  # read paths too are checked and kept resolved
            grants = request.grants.model_copy(update={"read": list(self._resolved(request.grants.read, "read"))})
            request = request.model_copy(update={"grants": grants})
        number = len(self._tree.children_of(parent.id)) + 1
        spec = self._catalog.child_spec(parent, request, scope, number)
        self._check_siblings(resolved, spec.isolation is not None)
        self._check_budget(request, spec)
        try:
            if spec.isolation == "worktree":
                spec = await self._tree.isolate(spec)
            return self._tree.start(spec).id
        except UserError as error:
            raise LinkRefusal(str(error)) from None

    def _check_budget(self, request: SummonRequest, child: AgentSpec) -> None:
        """Refuse a child whose budget (asked for, or its template's) is more than this agent has
        left; naming the template when the budget is its."""
        refusal = child_budget_refusal(self._tree, self._agent, child.budget_usd, child.max_tokens)
        if refusal is None:
            return
        asked = request_caps(request)
        pairs = (("budget_usd", child.budget_usd, asked.budget_usd), ("max_tokens", child.max_tokens, asked.max_tokens))
        given = [f"{name} {value:g}" for name, value, wanted in pairs if value is not None and value != wanted]
        if given:
            refusal += f"; template {child.template!r} gives each of its agents {', '.join(given)}: summon it with less"
        raise LinkRefusal(refusal)

    async def wait_children(self, ids: list[str], timeout_s: float | None) -> WaitOutcome:
        kids = [self._own_child(i) for i in ids] if ids else self._tree.children_of(self._agent.id)
        awaited = {k.id for k in kids}
        inbox = self._agent.inbox

        def interrupting(message: InboxMessage) -> bool:
            return not (message.kind is MessageKind.report and message.sender in awaited)

        interrupted = False
        async with self._agent.hooks.idle():  # waiting on others: its running slot goes back meanwhile
            with anyio.move_on_after(timeout_s if timeout_s is not None else float("inf")) as deadline:
                while live := [k for k in kids if not k.state.terminal]:
                    if any(interrupting(m) for m in inbox.peek()):
                        interrupted = True
                        break
                    self._agent.set_state(AgentState.waiting_children, f"waiting for {len(live)} children")
                    await inbox.next_arrival()
                    kids = [self._tree.agents.get(k.id, k) for k in kids]  # a child resumed meanwhile is a new Agent
        self._agent.set_state(AgentState.running)
        finished = [k for k in kids if k.state.terminal]
        done_ids = {k.id for k in finished}
        for report in inbox.take(lambda m: m.kind is MessageKind.report and m.sender in done_ids):
            step = self._agent.steps_taken  # read through this wait's result
            self._tree.events.publish(self._agent.id, MessageDelivered(message_id=report.id, step=step))
        return WaitOutcome(
            finished=[await self._with_changes(child_info(k, self._tree.merges.get(k.id))) for k in finished],
            pending=[child_info(k) for k in kids if not k.state.terminal],
            timed_out=deadline.cancelled_caught,
            interrupted=interrupted,
        )

    async def message_child(self, child_id: str, text: str, kind: MessageKind) -> str:
        child = self._own_child(child_id)
        if not child.reads_messages:
            raise LinkRefusal(f"child {child_id} has finished ({child.state.value}) or is giving its report")
        return self._tree.put_message(child_id, kind, text, sender="parent")

    async def cancel_child(self, child_id: str) -> ChildInfo:
        child = self._own_child(child_id)
        self._tree.cancel(child_id)
        await child.finished.wait()
        return child_info(child)

    async def compact_child(self, child_id: str) -> ChildInfo:
        child = self._own_child(child_id)
        if child.state.terminal:
            raise LinkRefusal(f"child {child_id} has finished ({child.state.value})")
        child.compact_requested = True
        return child_info(child)

    async def children(self) -> list[ChildInfo]:
        kids = self._tree.children_of(self._agent.id)
        return [await self._with_changes(child_info(c, self._tree.merges.get(c.id))) for c in kids]

    async def _changes(self, child_id: str) -> AgentChanges | None:
        tree = self._tree
        if tree.changes is None:
            return None
        ids = [child_id, *(d.id for d in tree.descendants(child_id))]
        root = tree.agents[child_id].spec.root  # an isolated child's: its worktree
        return await tree.changes.changes(child_id, Path(root) if root else tree.project_of(self._agent.spec).root, ids)

    async def _with_changes(self, info: ChildInfo) -> ChildInfo:
        """``info`` with the counts of what the child and its descendants changed, if any."""
        found = await self._changes(info.id)
        if found is None or not found.files:
            return info
        statuses = [f.status for f in found.files]
        summary = ChangeSummary(
            files=len(found.files),
            added=statuses.count("added"),
            modified=statuses.count("modified"),
            deleted=statuses.count("deleted"),
            additions=sum(f.additions for f in found.files),
            deletions=sum(f.deletions for f in found.files),
        )
        return info.model_copy(update={"changes": summary})

    async def child_changes(self, child_id: str) -> ChildChanges:
        self._own_child(child_id)
        found = await self._changes(child_id)
        if found is None:
            raise LinkRefusal("the hub does not track changes to files here (see its log for why)")
        files = [FileChangeInfo.model_validate(f.model_dump()) for f in found.files]
        return ChildChanges(id=child_id, files=files, diff=found.diff)

    def templates(self) -> list[TemplateInfo]:
        return [
            TemplateInfo(
                name=t.name,
                description=t.description,
                tools=t.tools_summary(),
                detached=t.detached,
                caps=template_caps(t).summary(),
            )
            for t in self._catalog.summonable(self._agent.spec)
        ]

    # ---- skills --------------------------------------------------------------------------------

    def skills(self) -> list[SkillInfo]:
        loaded = {s.skill for s in self._agent.loaded_skills}
        return [
            SkillInfo(name=s.ref, summary=s.summary(), loaded=s in loaded) for s in self._catalog.skills.on_demand()
        ]

    def load_skill(self, name: str) -> SkillInfo:
        try:
            skill = self._catalog.skills.resolve(name)
        except UserError as error:
            raise LinkRefusal(str(error)) from None
        info = SkillInfo(name=skill.ref, summary=skill.summary(), loaded=True)
        if skill in {s.skill for s in self._agent.loaded_skills}:
            return info
        self._agent.loaded_skills.append(LoadedSkill(skill, "loaded on demand"))
        self._tree.events.publish(self._agent.id, SkillLoaded(skill=skill.ref))
        return info.model_copy(update={"text": skill.read()})

    # ---- artifacts -----------------------------------------------------------------------------

    def _shelf(self) -> ArtifactShelf:
        if self._tree.artifacts is None:
            raise LinkRefusal("this run keeps no artifacts (they are kept when the agent runs under the hub)")
        return self._tree.artifacts

    async def save_artifact(self, kind: str, title: str, content: str) -> ArtifactInfo:
        saved = await self._shelf().save(self._agent.id, kind, title, content)
        self._tree.events.publish(self._agent.id, ArtifactSaved(artifact_id=saved.id, kind=kind, title=title))
        return saved

    async def find_artifacts(self, query: str | None, kind: str | None, limit: int) -> list[ArtifactInfo]:
        return await self._shelf().find(query, kind, limit)

    async def read_artifact(self, artifact_id: str) -> ArtifactInfo:
        found = await self._shelf().get(artifact_id)
        if found is None:
            raise LinkRefusal(f"no artifact has the id {artifact_id!r}; find_artifacts lists them")
        return found
