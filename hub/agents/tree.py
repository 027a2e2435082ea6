"""The tree of live agents: spawning, parent/child links, strict-hierarchy routing, cancellation.

The tree runs every agent in its own task group, so children run concurrently (each parent's
``max_children`` at once; more wait as ``pending``). A child's report goes to its parent's inbox
and nowhere else. The user may message any agent; the message waits in its inbox for the next
tool boundary. :class:`TreeLink` is the hub side of each agent's ``HubLink``. When the store's
disk fills up (:class:`DiskSpace`), every running agent turns ``waiting_disk``, with the store's
reason: what it is doing ends (a model call's usage waits to be saved), and it waits at its next
step boundary; once a write succeeds it is ``running`` again and goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, aclosing, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import anyio
import anyio.to_thread
from anyio import TASK_STATUS_IGNORED
from anyio.abc import TaskGroup, TaskStatus

from dispatch.hub.agents.access import AccessBroker, SessionAnswers
from dispatch.hub.agents.budgets import capped_ancestry, rolled_up
from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.agents.limits import Limits, RunningSlot
from dispatch.hub.agents.link import ArtifactShelf, CheckpointGate, TreeLink
from dispatch.hub.agents.loop import Agent, AgentHooks, Compacted, CompactionSettings, ToolRun
from dispatch.hub.agents.projects import Project
from dispatch.hub.agents.scopes import make_scopes
from dispatch.hub.agents.spec import SETUP_FAILURE, AgentSpec, AgentState, resumable
from dispatch.hub.changes.shadow import Blob
from dispatch.hub.changes.tracker import ChangeTracker, Snapshots
from dispatch.hub.changes.worktrees import MergeResult, Worktree, Worktrees, diff_commits, discover
from dispatch.hub.errors import (
    BudgetExceeded,
    DispatchError,
    HookStopped,
    StoreFull,
    UnknownAgentError,
    UserError,
    unwrap,
)
from dispatch.hub.events import (
    AgentCompacted,
    AgentModelSwitched,
    AgentReported,
    AgentResumed,
    AgentSpawned,
    AgentStateChanged,
    AgentStepped,
    ChangedFile,
    EventBus,
    FilesChanged,
    MessageDelivered,
    MessageSent,
    ModelDelta,
    Spent,
    ToolCalled,
    ToolHostLost,
    ToolHostStarted,
    ToolOutput,
    ToolReturned,
)
from dispatch.hub.ids import new_id
from dispatch.hub.llm.context import ContextMeter
from dispatch.hub.llm.ledger import usage_columns
from dispatch.hub.llm.router import Router
from dispatch.hub.llm.types import Delta, ModelClient, ToolCallRequest, Usage
from dispatch.hub.loop import not_serving_api
from dispatch.hub.mounts.connection import open_mounts
from dispatch.hub.mounts.hooks import HookCaller, TranscriptFile, UserHooks
from dispatch.hub.mounts.hosts import HostEngine, Returned
from dispatch.hub.mounts.hosts import ToolHostLost as HostLost
from dispatch.hub.mounts.outside import OutsideServers
from dispatch.hub.mounts.pins import ToolPins
from dispatch.hub.mounts.plan import MountPlan
from dispatch.hub.mounts.toolset import ToolGate, ToolTrack
from dispatch.hub.policy.paths import ROOT
from dispatch.hub.views import PlacementView
from dispatch.servers.hublink import ConflictInfo, InboxMessage, MergeInfo, MessageKind
from dispatch.servers.lsp.server import LspBackend

log = logging.getLogger(__name__)


def _failure_reason(error: BaseException, message: str | None) -> str:
    if isinstance(error, BudgetExceeded):
        return "budget"
    if isinstance(error, UserError):  # raised by the model path: a key, a model name, the config
        return f"{SETUP_FAILURE}{message}; fix it and resume the agent"
    return message or "failed"


async def _keep_open(outside: OutsideServers, *, task_status: TaskStatus[None] = TASK_STATUS_IGNORED) -> None:
    """Hold ``outside`` open until cancelled (a project's servers, opened after the tree started)."""
    async with outside:
        task_status.started()
        await anyio.sleep_forever()


class DiskSpace(Protocol):
    """Whether the hub's store can write (the store itself)."""

    @property
    def full(self) -> StoreFull | None:
        """While the disk is full: why (None when the last write succeeded)."""
        ...

    async def writable(self) -> None:
        """Return once a write has succeeded again (at once when not full)."""
        ...

    def watch_space(self, watcher: Callable[[StoreFull | None], None]) -> None:
        """Call ``watcher`` when the disk fills up (with why) and when a write succeeds again (None)."""
        ...


class AgentTree:
    """Every agent of one hub, alive or finished, and the task group they run in."""

    def __init__(
        self,
        root: Path,
        model: ModelClient,
        events: EventBus | None = None,
        catalog: Catalog | None = None,
        lsp: LspBackend | None = None,
        access: AccessBroker | None = None,
        artifacts: ArtifactShelf | None = None,
        limits: Limits | None = None,
        *,
        checkpoints: CheckpointGate | None = None,
        pins: ToolPins | None = None,
        agents: dict[str, Agent] | None = None,
        space: DiskSpace | None = None,
        changes: ChangeTracker | None = None,
        worktrees: Worktrees | None = None,
        hosts: HostEngine | None = None,
        transcripts: Path | None = None,
    ) -> None:
        self.root = root.resolve()
        self.transcripts = transcripts
        """Where agents' transcripts are written for their hooks to read (``transcript_path``, one
        ``<agent id>.jsonl`` each, only for agents with hooks); None: hooks get no transcript."""
        self.access = access
        """Who answers requests for paths outside an agent's grants; None: they are denied, saying so."""
        self.session_answers = SessionAnswers()
        """The user's answers about outside paths, the network and commands, kept for this session."""
        self.checkpoints = checkpoints
        """Who holds agents at their checkpoints (the hub's approvals); None: none hold."""
        self.artifacts = artifacts
        """Where ``save_artifact`` / ``find_artifacts`` keep and search; None: those tools refuse."""
        self.lsp = lsp
        """The hub's language servers (an entered ``LspManager``), shared by every agent; None: no lsp mounts."""
        self.events = events or EventBus()
        home = catalog or Catalog.builtin()
        self.home = Project(self.root, home, OutsideServers(home.config.mcp_servers, pins))
        """The hub's own project: ``catalog`` (``Catalog.load(root)``; the built-ins by default) and
        its outside MCP servers, their tool lists checked against ``pins`` (None: not pinned)."""
        self.projects: dict[Path, Project] = {self.root: self.home}
        """Every project open in this tree by root (:meth:`open_project`), the hub's own first."""
        self._pins = pins
        self.project_opened: Callable[[Project], object] | None = None
        """Called with each project :meth:`open_project` opens (the hub watches its config files)."""
        self.limits = limits or Limits(home.config.limits)
        """Agents taking steps and model calls in flight at once, hub-wide (the config's ``limits``)."""
        self.model = self.limits.capped(model)
        self.meter = model.meter if isinstance(model, Router) else ContextMeter(home.config.models, worker=False)
        """Models' context windows and token counts (litellm's, through the model worker, for the router's models)."""
        self.agents: dict[str, Agent] = {} if agents is None else agents
        """Every agent by id; ``agents`` shares the dict with whoever else reads it (the hub's approvals)."""
        self._children: dict[str, list[str]] = {}
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._slots: dict[str, RunningSlot] = {}
        self._budget_stops: dict[str, str] = {}
        self._interrupts: set[str] = set()
        self._cancel_reasons: dict[str, str] = {}
        self.draining = False
        """Set by :meth:`drain`: each agent stops (``interrupted``) at its next step boundary."""
        self.space = space
        """The store's disk: agents wait at a step boundary while it is full (None: never)."""
        if space is not None:
            space.watch_space(self._space_changed)
        self.changes = changes
        """Where each agent's writing tool calls are snapshotted (None: they are not tracked)."""
        self.worktrees = worktrees
        """Where children summoned with ``isolation: worktree`` get their worktrees (None: refused)."""
        self._worktrees: dict[str, tuple[Worktree, Path]] = {}
        """Each isolated child's worktree, and the root of the parent it merges into."""
        self.merges: dict[str, MergeInfo] = {}
        """How each isolated child's work came back into its parent's tree."""
        self.hosts = hosts
        """Where agents' fs, shell and lsp servers run (``execution.engine: ray``); None: in the hub's process."""
        self.placements: dict[str, PlacementView] = {}
        """Where each agent's tool host runs, once started (``execution.engine: ray``)."""
        self._calls: dict[str, dict[str, tuple[ToolCallRequest, float]]] = {}
        """Each agent's tool calls announced and not returned yet, with when they started."""
        if hosts is not None:
            hosts.watch(self._announce_host)
        self._group: TaskGroup | None = None
        self._keepers: TaskGroup | None = None
        """Where the outside servers of projects opened later are held open (entered and left in one task)."""

    async def __aenter__(self) -> AgentTree:
        await self.home.outside.__aenter__()
        self._keepers = await anyio.create_task_group().__aenter__()
        self._group = await anyio.create_task_group().__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._group is not None and self._keepers is not None
        self._group.cancel_scope.cancel()
        try:
            return await self._group.__aexit__(kind, error, tb)
        finally:  # after every agent: their shared servers stop
            self._keepers.cancel_scope.cancel()
            try:
                await self._keepers.__aexit__(None, None, None)
            finally:
                await self.home.outside.__aexit__(None, None, None)

    # ---- projects ----------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        """The hub's own project's catalog."""
        return self.home.catalog

    @property
    def outside(self) -> OutsideServers:
        """The hub's own project's outside MCP servers."""
        return self.home.outside

    def project_of(self, spec: AgentSpec) -> Project:
        """The project the agent works in (the hub's own when its spec names none)."""
        root = self.root if spec.root is None else Path(spec.root)
        project = self.projects.get(root)
        if project is None:
            raise UserError(f"the project {root} is not open in this hub; start work there first")
        return project

    async def open_project(self, root: Path) -> Project:
        """The project at ``root`` (absolute, resolved), its config read and checked the first time
        (ConfigError naming the file and field at fault; nothing is kept then)."""
        project = self.projects.get(root)
        if project is not None:
            return project
        catalog = await anyio.to_thread.run_sync(Catalog.load, root)
        if root in self.projects:  # opened by another caller meanwhile
            return self.projects[root]
        if self._keepers is None:
            raise RuntimeError("the tree is not running; use 'async with AgentTree(...)'")
        outside = OutsideServers(catalog.config.mcp_servers, self._pins)
        await self._keepers.start(_keep_open, outside, name=f"outside servers of {root}")
        project = self.projects[root] = Project(root, catalog, outside)
        if self.project_opened is not None:
            self.project_opened(project)
        return project

    async def isolate(self, spec: AgentSpec) -> AgentSpec:
        """``spec`` (a child's, ``isolation: worktree``) re-rooted into a new worktree of its
        parent's tree, which it works in as a project of its own with the parent's catalog and
        outside servers. UserError naming the field when that is not a git repository."""
        if self.worktrees is None:
            raise UserError("isolation: worktree is not available in this run (it needs the hub's data directory)")
        parent = self.project_of(spec)
        worktrees = self.worktrees
        try:
            made = await anyio.to_thread.run_sync(lambda: worktrees.create(spec.id, parent.root))
        except UserError:
            raise
        except (DispatchError, OSError) as error:  # git failed: the summon is refused saying why
            raise UserError(f"isolation: worktree: {error}") from None
        self._worktrees[spec.id] = (made, parent.root)
        if self.changes is not None:
            self.changes.share(made.root, self._store_root(parent.root))
        self.projects[made.root] = Project(made.root, parent.catalog, parent.outside)
        return spec.model_copy(update={"root": str(made.root)})

    def _store_root(self, root: Path) -> Path:
        """The project whose shadow store holds the snapshots of ``root`` (a worktree's: its parent's)."""
        for worktree, into in self._worktrees.values():
            if worktree.root == root:
                return self._store_root(into)
        return root

    async def _merge_back(self, agent: Agent) -> None:
        """Merge a reporting agent's work done elsewhere: first what came back from a copy of its
        project on a Ray node, into its root; then an isolated child's worktree into its parent's
        tree. Each after the ``before_merge`` checkpoint (denied: discarded; asked once, for the
        last merge); the worktree is removed either way."""
        back = self.hosts.take_returned(agent.id) if self.hosts is not None else None
        if back is not None:
            try:
                await self._merge_returned(agent, back, ask=agent.id not in self._worktrees)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._discard(agent.id)
                raise
            outcome = self.merges[agent.id].outcome
            if outcome != "merged" and agent.id in self._worktrees:  # nothing of it reached the worktree
                with anyio.CancelScope(shield=True):
                    await self._discard(agent.id)
                return
        held = self._worktrees.get(agent.id)
        if held is None or self.worktrees is None:
            return
        worktree, into = held
        worktrees = self.worktrees
        try:
            if self.checkpoints is not None:
                diff = await anyio.to_thread.run_sync(lambda: worktrees.diff(worktree))
                reason = await self.checkpoints.before_merge(agent, diff) if diff else None
                if reason is not None:
                    self.merges[agent.id] = MergeInfo(outcome="discarded", reason=reason)
                    return
            with anyio.CancelScope(shield=True):
                try:
                    result = await anyio.to_thread.run_sync(lambda: worktrees.merge(worktree, into))
                    self.merges[agent.id] = _merge_info(result)
                except DispatchError as error:
                    self.merges[agent.id] = MergeInfo(outcome="discarded", reason=f"the merge failed: {error}")
        finally:
            with anyio.CancelScope(shield=True):
                await self._discard(agent.id)

    async def _merge_returned(self, agent: Agent, back: Returned, *, ask: bool) -> None:
        """Merge the work that came back from the agent's copy of its project into its root, as a
        worktree is merged; what it writes is recorded as the agent's changes."""
        if back.child is None:
            self.merges[agent.id] = MergeInfo(outcome="discarded", reason=back.error)
            return
        worktrees, child = self.worktrees, back.child
        if worktrees is None:
            self.merges[agent.id] = MergeInfo(outcome="discarded", reason="merging needs the hub's data directory")
            return
        git_dir = await anyio.to_thread.run_sync(lambda: _git_dir(back.root))
        if ask and self.checkpoints is not None and git_dir is not None:
            diff = await anyio.to_thread.run_sync(lambda: diff_commits(git_dir, back.base, child))
            reason = await self.checkpoints.before_merge(agent, diff) if diff else None
            if reason is not None:
                self.merges[agent.id] = MergeInfo(outcome="discarded", reason=reason)
                return
        window = self._recorded(agent, back.root)
        with anyio.CancelScope(shield=True):
            try:
                async with window("shell", "run", {}):  # a window on its scope: the changes it writes
                    result = await anyio.to_thread.run_sync(
                        lambda: worktrees.merge_commit(agent.id, back.base, child, back.root)
                    )
                self.merges[agent.id] = _merge_info(result)
            except DispatchError as error:
                self.merges[agent.id] = MergeInfo(outcome="discarded", reason=f"the merge failed: {error}")

    async def _discard(self, agent_id: str) -> None:
        """Remove the agent's worktree and branch, if it has one, and drop what came back from its
        copy on a node, if any (its work, unmerged, is gone)."""
        back = self.hosts.take_returned(agent_id) if self.hosts is not None else None
        if back is not None and agent_id not in self.merges:
            self.merges[agent_id] = MergeInfo(outcome="discarded", reason="it did not report")
        held = self._worktrees.pop(agent_id, None)
        if held is None or self.worktrees is None:
            return
        worktrees, worktree = self.worktrees, held[0]
        self.projects.pop(worktree.root, None)
        if agent_id not in self.merges:
            self.merges[agent_id] = MergeInfo(outcome="discarded", reason="it did not report")
        await anyio.to_thread.run_sync(lambda: worktrees.remove(worktree))

    # ---- looking things up -------------------------------------------------------------------

    def get(self, agent_id: str) -> Agent:
        try:
            return self.agents[agent_id]
        except KeyError:
            raise UnknownAgentError(f"no agent has the id {agent_id!r}") from None

    def children_of(self, agent_id: str) -> list[Agent]:
        return [self.agents[c] for c in self._children.get(agent_id, [])]

    def live_children(self, agent_id: str) -> list[Agent]:
        return [c for c in self.children_of(agent_id) if not c.state.terminal]

    def descendants(self, agent_id: str) -> Iterator[Agent]:
        for child in self.children_of(agent_id):
            yield child
            yield from self.descendants(child.id)

    # ---- spawning and running ----------------------------------------------------------------

    def start(
        self,
        spec: AgentSpec,
        *,
        restore: Callable[[Agent], None] | None = None,
        run: bool = True,
        chat_id: str | None = None,
    ) -> Agent:
        """Register the agent and start running it in the tree's task group.

        ``restore`` rebuilds an agent from the store first (transcript, usage, steps, inbox); it
        then continues from its last persisted step (``agent.resumed``, not ``agent.spawned``).
        With ``run=False`` it is only registered, as restored, so that links to it hold (a finished
        child, or a paused parent, of a resumed agent); an ``interrupted`` one may be started later.
        ``chat_id``: the chat a top agent answers, announced with it (the store files it there).
        """
        if self._group is None:
            raise RuntimeError("the tree is not running; use 'async with AgentTree(...)'")
        old = self.agents.get(spec.id)
        paused = old is not None and resumable(old.state.value, old.reason) and old.finished.is_set()
        if old is not None and not (restore is not None and paused):
            raise UserError(f"an agent with the id {spec.id!r} exists already")
        if spec.root is None:
            spec = spec.model_copy(update={"root": str(self.root)})
        project = self.project_of(spec)
        skills = project.catalog.skills_for(spec) if restore is None else []
        instructions = project.catalog.instructions_for(spec) if restore is None else []
        hooks = AgentHooks(
            live_children=lambda: len(self.live_children(spec.id)),
            on_state=self._announce_state,
            on_tool_call=self._announce_tool_call,
            on_tool_result=self._announce_tool_result,
            before_report=self._before_report,
            idle=lambda: self._idle(spec.id),
            meter=self.meter,
            compaction=self._compaction_settings,
            on_compacted=self._announce_compacted,
            children_note=lambda: self._children_note(spec.id),
            user_hooks=self._user_hooks(spec, project),
            on_delta=self._announce_delta,
            on_tool_output=self._announce_tool_output,
            streaming=lambda: self.events.watched,
        )
        agent = Agent(spec=spec, hooks=hooks, loaded_skills=skills, project_instructions=instructions)
        if restore is not None:
            restore(agent)
        self.agents[spec.id] = agent
        if spec.parent_id is not None and old is None:
            self._children.setdefault(spec.parent_id, []).append(spec.id)
        self._limiters.setdefault(spec.id, anyio.CapacityLimiter(spec.max_children))
        if not run:
            agent.finished.set()
            return agent
        spawned = AgentSpawned(
            parent_id=spec.parent_id,
            name=spec.name,
            template=spec.template,
            model=spec.model,
            task=spec.task,
            scope=list(spec.scope),
            detached=spec.detached,
            skills=[s.skill.ref for s in skills],
            chat_id=chat_id,
            root=spec.root,
            spec_json="" if restore else spec.model_dump_json(),
        )  # a resumed one is announced with the same fields (the store has its spec)
        self.events.publish(spec.id, AgentResumed.model_validate(spawned.model_dump()) if restore else spawned)
        with not_serving_api():  # started by a request or not, an agent's work queues behind the API's
            self._group.start_soon(self._run, agent, name=f"agent {spec.id}")
        return agent

    def _user_hooks(self, spec: AgentSpec, project: Project) -> UserHooks | None:
        """The config's hooks for this agent (None when the config has none)."""
        config = project.catalog.config.hooks
        if not config.configured:
            return None
        top = spec
        while top.parent_id is not None and top.parent_id in self.agents:
            top = self.agents[top.parent_id].spec
        caller = HookCaller(spec.id, spec.name, spec.parent_id, top.id)
        transcript = None
        if self.transcripts is not None:
            path = self.transcripts / f"{spec.id}.jsonl"
            transcript = TranscriptFile(path, lambda: self.agents[spec.id].transcript)
        return UserHooks(config, project.root, caller, transcript)

    async def run(self, spec: AgentSpec) -> Agent:
        """Start an agent and return it once it has finished."""
        agent = self.start(spec)
        await agent.finished.wait()
        return agent

    async def _run(self, agent: Agent) -> None:
        parent_id = agent.spec.parent_id
        limiter = self._limiters.get(parent_id) if parent_id else None
        with anyio.CancelScope() as scope:
            self._scopes[agent.id] = scope
            try:
                if limiter is not None:
                    async with limiter:
                        await self._run_in_slot(agent)
                else:
                    await self._run_in_slot(agent)
            except Exception as raised:  # whatever went wrong fails this agent, never the hub
                self._ended_by(agent, unwrap(raised))
        if scope.cancel_called and not agent.state.terminal and agent.state is not AgentState.interrupted:
            if agent.id in self._interrupts:
                agent.set_state(AgentState.interrupted, "the hub stopped; resume it to continue from its last step")
            elif agent.id in self._budget_stops:
                agent.error = self._budget_stops.pop(agent.id)
                agent.set_state(AgentState.failed, "budget")
            else:
                agent.set_state(AgentState.cancelled, self._cancel_reasons.pop(agent.id, "cancelled"))
        self._cancel_reasons.pop(agent.id, None)
        self._scopes.pop(agent.id, None)
        self._interrupts.discard(agent.id)
        self._calls.pop(agent.id, None)
        if self.changes is not None:
            self.changes.forget(agent.id)
        with anyio.CancelScope(shield=True):
            await self._discard(agent.id)  # one that did not report: its worktree goes unmerged
        if agent.state is not AgentState.interrupted:  # an interrupted agent's children stop on their own
            stopping = self.live_children(agent.id)
            for child in stopping:
                self.cancel(child.id)
            for child in stopping:  # whoever waits for it finds its children stopped too
                await child.finished.wait()
            self._report_to_parent(agent)
        agent.finished.set()

    def _ended_by(self, agent: Agent, error: BaseException) -> None:
        """The state an error raised out of its run leaves the agent in."""
        if isinstance(error, HostLost):  # its node stopped: resumable on another
            self._fail_calls(agent, str(error))
            agent.set_state(AgentState.interrupted, str(error))
            return
        if isinstance(error, HookStopped):  # the user's hook stopped it, as the user would
            agent.set_state(AgentState.cancelled, str(error))
            return
        if isinstance(error, DispatchError):
            agent.error = str(error)
        else:
            log.error("agent %s failed", agent.id, exc_info=error)
            agent.error = f"{type(error).__name__}: {error}"
        if agent.state is not AgentState.interrupted:
            agent.set_state(AgentState.failed, _failure_reason(error, agent.error))

    async def _run_in_slot(self, agent: Agent) -> None:
        """Run the agent holding one of the hub's running slots (pending, queued, until one is free)."""
        async with self.limits.running(lambda reason: agent.set_state(AgentState.pending, reason)) as slot:
            self._slots[agent.id] = slot
            try:
                await self._loop(agent)
            finally:
                del self._slots[agent.id]

    def _idle(self, agent_id: str) -> AbstractAsyncContextManager[None]:
        slot = self._slots.get(agent_id)
        return slot.idle() if slot is not None else nullcontext()

    async def _loop(self, agent: Agent) -> None:
        if self.draining:  # summoned (or freed from its parent's limit) while the hub stops
            agent.set_state(AgentState.interrupted, "the hub stopped before it ran; resume it to start")
            return
        agent.set_state(AgentState.running)
        project = self.project_of(agent.spec)
        if any(scope != ROOT for scope in agent.spec.scope):  # the root exists: no thread hop for it
            await anyio.to_thread.run_sync(make_scopes, project.root, agent.spec.scope)  # before its servers start
        plan = MountPlan(
            project.root,
            agent.spec.grants,
            agent.spec.detached,
            agent.spec.isolated,
            self.lsp,
            sandbox=project.catalog.config.sandbox,
            processes=self.limits.processes,
            max_commands=self.limits.commands_per_agent,
            web_search=project.catalog.config.web.search,
            outside=project.outside,
            agent_id=agent.id,
            hosts=self.hosts,
            placement=agent.spec.placement,
        )
        async with (
            open_mounts(
                plan, TreeLink(self, agent), self._gate(agent), self._track(agent, project), agent.hooks.user_hooks
            ) as mounts,
            aclosing(agent.steps(mounts, self.model, self.limits.step_caps)) as steps,
        ):
            async for step in steps:
                usage = step.completion.usage
                stepped = AgentStepped(
                    index=step.index,
                    text=step.completion.text,
                    tool_calls=[c.name for c in step.completion.tool_calls],
                    tokens_in=usage.prompt_tokens,
                    tokens_out=usage.completion_tokens,
                    cost_usd=usage.cost_usd,
                    first=step.first,
                    messages=step.messages,
                    spent=_spent(agent),
                    model=step.completion.model,
                    asked_at=step.completion.answered_at - step.completion.latency_s,
                    answered_at=step.completion.answered_at,
                    cache_read_tokens=usage.cache_read_tokens,
                    cache_write_tokens=usage.cache_write_tokens,
                )
                self.events.publish(agent.id, stepped)
                for message in step.delivered:
                    self.events.publish(agent.id, MessageDelivered(message_id=message.id, step=step.index))
                if step.report is not None:
                    agent.report = step.report
                self._enforce_budgets(agent, finishing=step.report is not None)
                if self.draining and step.report is None:
                    agent.set_state(AgentState.interrupted, f"the hub stopped after step {step.index}; resume it")
                    return
                await self._wait_for_space(agent)
        await self._merge_back(agent)  # before it is done: whoever waits for it sees the merge
        agent.set_state(AgentState.done)
        self.events.publish(agent.id, AgentReported(report=agent.report))

    def _space_changed(self, full: StoreFull | None) -> None:
        for agent in list(self.agents.values()):
            if full is not None and agent.state is AgentState.running:
                agent.set_state(AgentState.waiting_disk, str(full))
            elif full is None and agent.state is AgentState.waiting_disk:
                agent.set_state(AgentState.running)

    async def _wait_for_space(self, agent: Agent) -> None:
        """While the store's disk is full, wait (``waiting_disk``, its slot free) until a write succeeds."""
        full = self.space.full if self.space is not None else None
        if full is None or self.space is None:
            return
        agent.set_state(AgentState.waiting_disk, str(full))
        async with self._idle(agent.id):
            await self.space.writable()
        agent.set_state(AgentState.running)

    def _enforce_budgets(self, agent: Agent, *, finishing: bool) -> None:
        """Stop every agent on the path to the root whose subtree reached its cap: the agent itself
        by raising (unless it is reporting anyway), an ancestor and its subtree by cancelling."""
        own: str | None = None
        for capped, message in capped_ancestry(self, agent):
            if capped is agent:
                own = message
            elif not capped.state.terminal:
                self._budget_stops[capped.id] = message
                for below in [capped, *self.descendants(capped.id)]:  # at once: none makes another call
                    self.cancel(below.id)
        if own is not None and not finishing:
            raise BudgetExceeded(own)

    def spend(self, agent_id: str) -> Usage:
        """What the agent and its descendants have used so far, rolled up live."""
        return rolled_up(self, agent_id)

    def _report_to_parent(self, agent: Agent) -> None:
        parent_id = agent.spec.parent_id
        if parent_id is None or parent_id not in self.agents or not self.agents[parent_id].reads_messages:
            return  # the report stays in the child's own record
        if agent.state is AgentState.done:
            text = agent.report or "(the child reported nothing)"
        elif agent.state is AgentState.failed:
            text = f"(the child failed: {agent.error})"
        elif agent.reason and agent.reason != "cancelled":
            text = f"(the child was cancelled before it reported: {agent.reason})"
        else:
            text = "(the child was cancelled before it reported)"
        self.put_message(parent_id, MessageKind.report, text, sender=agent.id)

    # ---- messages, cancellation, model switch ------------------------------------------------

    def put_message(self, agent_id: str, kind: MessageKind, text: str, *, sender: str = "user") -> str:
        """Put a message in an agent's inbox; it reads it at its next tool boundary."""
        agent = self.get(agent_id)
        if agent.state.terminal:
            raise UserError(f"agent {agent_id} has finished ({agent.state.value}); it reads no more messages")
        if agent.inbox.closed:
            raise UserError(f"agent {agent_id} is giving its report; it reads no more messages")
        message = InboxMessage(id=new_id("m"), kind=kind, text=text, sender=sender, sent_at=datetime.now(UTC))
        agent.inbox.put(message)
        self.events.publish(agent_id, MessageSent(message_id=message.id, kind=kind.value, sender=sender, text=text))
        return message.id

    def cancel(self, agent_id: str, reason: str = "cancelled") -> Agent:
        """Cancel an agent and, through it, all its descendants; ``reason`` is its state's."""
        agent = self.get(agent_id)
        scope = self._scopes.get(agent_id)
        if scope is not None:
            self._cancel_reasons.setdefault(agent_id, reason)
            scope.cancel()
        elif not agent.state.terminal:
            agent.set_state(AgentState.cancelled, reason)
        return agent

    def request_compaction(self, agent_id: str) -> Agent:
        """Have the agent compact what it sends before its next model call, whatever its size."""
        agent = self.get(agent_id)
        if agent.state.terminal:
            raise UserError(f"agent {agent_id} has finished ({agent.state.value}); it makes no more model calls")
        agent.compact_requested = True
        return agent

    def drain(self) -> None:
        """Stop taking new steps: every agent stops, ``interrupted``, when its current step ends."""
        self.draining = True

    def interrupt(self, agent_id: str) -> None:
        """Stop the agent now, ``interrupted`` (resumable from its last step), not cancelled."""
        agent = self.get(agent_id)
        if agent.state.terminal or agent.state is AgentState.interrupted:
            return
        scope = self._scopes.get(agent_id)
        if scope is None:
            agent.set_state(AgentState.interrupted, "the hub stopped before it ran; resume it to start")
            return
        self._interrupts.add(agent_id)
        scope.cancel()

    def switch_model(self, agent_id: str, model: str) -> None:
        agent = self.get(agent_id)
        agent.switch_model(model)
        self.events.publish(agent_id, AgentModelSwitched(model=model))

    # ---- announcements -----------------------------------------------------------------------

    def _announce_state(self, agent: Agent) -> None:
        until = agent.waiting_until.isoformat() if agent.waiting_until is not None else None
        changed = AgentStateChanged(
            state=agent.state.value, reason=agent.reason, until=until, error=agent.error, spent=_spent(agent)
        )
        self.events.publish(agent.id, changed)

    def placement_of(self, agent_id: str) -> PlacementView:
        """Where the agent's tool servers run: its tool host's node, or the hub's process."""
        placed = self.placements.get(agent_id)
        return placed if placed is not None else PlacementView(engine="local" if self.hosts is None else "ray")

    def _announce_host(self, agent_id: str, placement: PlacementView, lost: str | None) -> None:
        if lost is None:
            self.placements[agent_id] = placement
            event = ToolHostStarted(**placement.model_dump())
            self.events.publish(agent_id, event)
        else:
            self.events.publish(
                agent_id, ToolHostLost(node_id=placement.node_id, address=placement.address, reason=lost)
            )

    def _compaction_settings(self) -> CompactionSettings:
        models = self.catalog.config.models
        return CompactionSettings(models.compact_at, models.compact_model)

    def _children_note(self, agent_id: str) -> str:
        lines: list[str] = []
        for child in self.children_of(agent_id):
            line = f"- {child.spec.name} [{child.id}]: {child.state.value}; task: {child.spec.task[:200]}"
            outcome = child.report if child.state is AgentState.done else child.error
            if outcome:
                line += f"; reported: {outcome[:300]}" + ("..." if len(outcome) > 300 else "")
            lines.append(line)
        return "\n".join(lines)

    def _announce_compacted(self, agent: Agent, compacted: Compacted) -> None:
        record = compacted.compaction
        event = AgentCompacted(
            tokens_before=compacted.tokens_before,
            tokens_after=compacted.tokens_after,
            model=compacted.model,
            compactions=record.count,
            upto=record.summarised if compacted.model is not None else record.shortened,
            summary=record.summary if compacted.model is not None else None,
            compaction_json=record.model_dump_json(),
            spent=_spent(agent),
        )
        self.events.publish(agent.id, event)

    def _announce_delta(self, agent: Agent, step: int, delta: Delta) -> None:
        self.events.publish(agent.id, ModelDelta(step=step, text=delta.text, tool=delta.tool))

    def _announce_tool_output(self, agent: Agent, call: ToolCallRequest, text: str) -> None:
        self.events.publish(agent.id, ToolOutput(call_id=call.id, name=call.name, text=text))

    def _announce_tool_call(self, agent: Agent, call: ToolCallRequest) -> None:
        self._calls.setdefault(agent.id, {})[call.id] = (call, anyio.current_time())
        self.events.publish(agent.id, ToolCalled(call_id=call.id, name=call.name, arguments=call.arguments))

    def _announce_tool_result(self, agent: Agent, run: ToolRun) -> None:
        call, outcome = run.call, run.outcome
        self._calls.get(agent.id, {}).pop(call.id, None)
        returned = ToolReturned(
            call_id=call.id,
            name=call.name,
            is_error=outcome.is_error,
            text=outcome.text[:2000],
            seconds=run.seconds,
            blocked=outcome.blocked,
        )
        self.events.publish(agent.id, returned)

    def _fail_calls(self, agent: Agent, reason: str) -> None:
        """Announce an error result for each of the agent's calls still running (its tool host was
        lost under them), so that every ``tool.call`` has its ``tool.result``."""
        now = anyio.current_time()
        for call, started in self._calls.pop(agent.id, {}).values():
            returned = ToolReturned(
                call_id=call.id, name=call.name, is_error=True, text=f"Error: {reason}"[:2000], seconds=now - started
            )
            self.events.publish(agent.id, returned)

    # ---- checkpoints -------------------------------------------------------------------------

    async def _before_report(self, agent: Agent, report: str) -> None:
        if self.checkpoints is not None:
            await self.checkpoints.before_report(agent, report)

    def _track(self, agent: Agent, project: Project) -> ToolTrack | None:
        if self.changes is None:
            return None
        track = self._recorded(agent, project.root)

        def hook(kind: str, name: str, arguments: dict[str, Any]) -> AbstractAsyncContextManager[None]:
            placed = self.placements.get(agent.id)
            if placed is not None and placed.files == "copy":  # it writes its copy: recorded at its merge
                return nullcontext()
            return track(kind, name, arguments)

        return hook

    def _recorded(self, agent: Agent, root: Path) -> ToolTrack:
        """A window of the agent's scope in ``root``: what changes in it is announced as its changes."""

        def record(snapshots: Snapshots) -> None:
            files = [ChangedFile(path=f.path, before=_blob(f.before), after=_blob(f.after)) for f in snapshots.files]
            self.events.publish(agent.id, FilesChanged(before=snapshots.before, after=snapshots.after, files=files))

        if self.changes is None:
            return lambda kind, name, arguments: nullcontext()
        return self.changes.track(agent.id, root, agent.spec.scope, record)

    def _gate(self, agent: Agent) -> ToolGate:
        async def gate(kind: str, name: str, arguments: dict[str, Any]) -> str | None:
            checkpoints = self.checkpoints
            return None if checkpoints is None else await checkpoints.before_tool(agent, kind, name, arguments)

        return gate


def _merge_info(result: MergeResult) -> MergeInfo:
    if result.conflicts:
        conflicts = [ConflictInfo(path=c.path, yours=c.parent, child=c.child) for c in result.conflicts]
        reason = "both you and the child changed these files; nothing was written"
        return MergeInfo(outcome="conflict", conflicts=conflicts, reason=reason)
    return MergeInfo(outcome="merged", files=result.files)


def _git_dir(root: Path) -> Path | None:
    found = discover(root)
    return None if found is None else found[0].git_dir


def _blob(blob: Blob | None) -> str | None:
    return None if blob is None else f"{blob.mode} {blob.sha}"


def _spent(agent: Agent) -> Spent:
    return Spent(**usage_columns(agent.usage))
