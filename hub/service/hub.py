"""The hub at run time: the store, the event journal, the tree of agents, the chats and the
approvals of one data directory, behind :class:`~dispatch.hub.service.contract.HubService`.

Every command builds it the same way, with :meth:`Hub.open` (``dispatch serve``, ``run``, ``mcp``
and ``resume``): the same store, journal, approvals, pins and limits, wired as they are built.
What differs is around it: ``serve`` answers approvals through the API, ``run`` in the terminal::

    async with Hub.open(root, data_dir) as hub:    # data_dir: $DISPATCH_HOME when None
        hub.advertise("http://127.0.0.1:8421")    # once serving: written to the lock file
        code = await serve_until_signalled(hub, serve=server.serve, stop_serving=stop)

:meth:`Hub.open` refuses a data directory another hub holds (``HubRunning``, naming its pid and
address) and a broken config (``ConfigError``). On open, agents a dead hub left unfinished are
marked ``interrupted``; :meth:`Hub.resume` continues one. :meth:`Hub.stop` (and leaving the
context) stops taking new work, lets running steps finish up to a deadline, marks what is left
``interrupted`` and commits everything. Every change is committed to the store before it is
announced (:mod:`dispatch.hub.store.journal`); a call that returns has had its write committed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream

from dispatch.hub.agents.catalog import DEFAULT_TEMPLATE, Catalog
from dispatch.hub.agents.compaction import Compaction
from dispatch.hub.agents.link import ArtifactShelf
from dispatch.hub.agents.loop import Agent
from dispatch.hub.agents.projects import Project
from dispatch.hub.agents.spec import NO_CAPS, AgentSpec, AgentState, Caps
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.changes.tracker import ChangeTracker
from dispatch.hub.changes.worktrees import Worktrees
from dispatch.hub.errors import StoreFull, UnknownAgentError, UserError
from dispatch.hub.events import (
    HUB,
    AgentModelSwitched,
    ConfigRefused,
    ConfigReloaded,
    DataDirFull,
    DataDirWritable,
    Event,
    EventBus,
    MessageSent,
    each_queued,
)
from dispatch.hub.ids import new_id
from dispatch.hub.llm.client import start_model_worker
from dispatch.hub.llm.defaults import DefaultModel, no_model_hint
from dispatch.hub.llm.models_config import ModelsConfig
from dispatch.hub.llm.recorded import RecordedCalls
from dispatch.hub.llm.router import Router
from dispatch.hub.llm.types import ModelClient
from dispatch.hub.mounts.hosts import HostEngine
from dispatch.hub.mounts.pins import ToolPins
from dispatch.hub.service.agent_views import ViewJson, live_facts, live_view, stored_view
from dispatch.hub.service.approvals import Approvals
from dispatch.hub.service.changes import CHANGES_DIR, WORKTREES_DIR, ChangeDesk, JournaledChanges
from dispatch.hub.service.chats import ChatService
from dispatch.hub.service.config_watch import ConfigWatch, Reloaded
from dispatch.hub.service.contract import HubService
from dispatch.hub.service.delegation import Delegation
from dispatch.hub.service.lifecycle import (
    DEFAULT_DEADLINE_S,
    HubLock,
    drain,
    execution_engine,
    hub_logging,
    prepare_data_dir,
    resolved,
)
from dispatch.hub.service.resume import Restorer, mark_interrupted, paused
from dispatch.hub.service.tracing import traced
from dispatch.hub.store.db import DB_NAME, Store
from dispatch.hub.store.journal import JournaledBus, JournaledLedger, Recorder
from dispatch.hub.store.records import AgentRow, Records
from dispatch.hub.views import (
    AgentChanges,
    AgentDetail,
    AgentView,
    ChatView,
    HubView,
    LimitsView,
    RewindView,
    ToolServerView,
)
from dispatch.servers.hublink import USER_KINDS, MessageKind
from dispatch.servers.lsp import LspBackend
from dispatch.servers.lsp.manager import LspManager
from dispatch.servers.sandbox import mode_in_force

IN_PROCESS_KEY = "in-process"
"""The usage ledger's key name for the calls of a model client the hub was given (the demo's)."""

TRANSCRIPTS_DIR = "transcripts"
"""The data directory's folder of the transcripts hooks read (``transcript_path``), one file per agent with hooks."""

LIST_SLICE_S = 0.010
"""How long :meth:`Hub.agents` builds views before it lets the event loop turn. A list of hundreds
of agents, their views kept, takes a few milliseconds and is built in one go: each turn it waited
out was tens of milliseconds while hundreds of agents worked (bench/README.md has the figures). A
longer one (thousands of views made afresh) still lets a message or an event on its way through."""
LIST_SLICE = 64
"""How many views are built between two looks at the clock."""


async def _slices(ids: list[str]) -> AsyncIterator[list[str]]:
    """``ids`` a slice at a time; the loop turns before a slice once :data:`LIST_SLICE_S` has
    passed since it last turned."""
    began = time.perf_counter()
    for start in range(0, len(ids), LIST_SLICE):
        if start and time.perf_counter() - began >= LIST_SLICE_S:
            await anyio.lowlevel.checkpoint()
            began = time.perf_counter()
        yield ids[start : start + LIST_SLICE]


def gated_tree(
    root: Path,
    model: ModelClient,
    events: EventBus,
    catalog: Catalog,
    store: Store,
    *,
    lsp: LspBackend | None = None,
    artifacts: ArtifactShelf | None = None,
    changes: ChangeTracker | None = None,
    worktrees: Worktrees | None = None,
    hosts: HostEngine | None = None,
    transcripts: Path | None = None,
) -> tuple[AgentTree, Approvals]:
    """The hub's tree (not yet entered) and its approvals, wired to each other as they are built:
    the approvals answer the tree's access requests and hold its checkpoints, the pins in ``store``
    put changed tool lists to them."""
    agents: dict[str, Agent] = {}  # the tree's live agents; the approvals read the asking agent's chain in it
    approvals = Approvals(store, events, root=root.resolve(), agents=agents)
    tree = AgentTree(
        root, model, events, catalog, lsp=lsp, access=approvals, artifacts=artifacts,
        checkpoints=approvals, pins=ToolPins(store, approvals), agents=agents, space=store, changes=changes,
        worktrees=worktrees, hosts=hosts, transcripts=transcripts,
    )  # fmt: skip
    return tree, approvals


def _watch_config(project: Project, client: ModelClient | None, events: EventBus) -> ConfigWatch:
    """The watch that hands edits of a project's config, templates and skills to its agents
    started afterwards, announcing each as an event of the hub. ``client``: the key router to
    hand the models section to (the hub's own project's; None for the others)."""

    def reloaded(done: Reloaded) -> None:
        project.catalog = done.catalog
        if isinstance(client, Router):
            client.use(done.catalog.config.models)
        events.publish(HUB, ConfigReloaded(restart_needed=list(done.needs_restart)))

    def refused(error: str) -> None:
        events.publish(HUB, ConfigRefused(error=error))

    return ConfigWatch(project.root, project.catalog, on_reload=reloaded, on_invalid=refused)


def _pickable_models(models: ModelsConfig) -> list[str]:
    """The configured tags (sorted), then each configured model as ``provider/model`` (in file order)."""
    tags = sorted({tag for key in models.keys for entry in key.models.values() for tag in entry.tags})
    names = [key.litellm_model(name) for key in models.keys for name in key.models]
    return list(dict.fromkeys([*tags, *names]))


def _project_root(root: str) -> Path:
    """``root`` as a project root: absolute, an existing directory, symlinks resolved."""
    try:
        asked = Path(root.strip()).expanduser()  # "~someone" of no such user: RuntimeError
        if not asked.is_absolute():
            raise UserError(f"root: {root!r} is not an absolute path")
        if asked.is_dir():
            return resolved(asked)
    except (RuntimeError, ValueError, OSError):  # no such home, a NUL byte, a name the OS refuses
        pass
    raise UserError(f"root: {root!r} is not a directory")


def _announce_space(events: EventBus, full: StoreFull | None) -> None:
    """Tell everyone when the data directory fills up, and when it can be written again."""
    events.publish(HUB, DataDirFull(error=str(full)) if full is not None else DataDirWritable())


class Hub(Delegation):
    """One hub: implements ``HubService``. Build it with :meth:`Hub.open`, never directly."""

    def __init__(
        self, *, root: Path, data_dir: Path, lock: HubLock, store: Store, bus: JournaledBus, tree: AgentTree
    ) -> None:
        self.root = root
        self.data_dir = data_dir
        self.lock = lock
        self.store = store
        self.tree = tree
        self._bus = bus
        self._records = Records(store)
        self._recorder = bus.recorder
        self._restorer = Restorer(tree, self._records, bus.recorder)
        tracker = tree.changes or ChangeTracker(data_dir / CHANGES_DIR, self._records)
        self._changes = ChangeDesk(self._records, tracker, root, tree=tree, flush=bus.journal.flush)
        self._rows: dict[str, AgentRow] = {}
        self._json = ViewJson()
        self.stopping = False
        self._stopped = anyio.Event()

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        root: Path,
        data_dir: Path | None = None,
        *,
        default_model: str | None = None,
        address: str | None = None,
        model: ModelClient | None = None,
    ) -> AsyncGenerator[Hub]:
        """The hub of project ``root`` on ``data_dir``, running until the context exits.
        ``default_model``: the tag or model name of top agents (chats' and :meth:`start`'s) whose
        template names none; ``address``: where it serves, for the lock file (or call
        :meth:`advertise` later); ``model``: the model client (the config's key router by default)."""
        root, home = resolved(root), prepare_data_dir(data_dir)
        async with AsyncExitStack() as stack:
            lock = HubLock.acquire(home, address, root)
            stack.callback(lock.release)
            stack.enter_context(hub_logging(home))
            catalog = Catalog.load(root)
            hosts = await stack.enter_async_context(execution_engine(catalog.config.execution, home))  # stopped last
            store = await stack.enter_async_context(Store.open(home / DB_NAME))
            records = Records(store)
            bus = JournaledBus(records, Recorder(root), await records.last_event_id())
            store.watch_space(lambda full: _announce_space(bus, full))
            writer = await stack.enter_async_context(anyio.create_task_group())
            writer.start_soon(bus.journal.run, name="journal writer")
            stack.push_async_callback(bus.journal.close)
            await stack.enter_async_context(traced(bus))  # off unless OTEL_EXPORTER_OTLP_ENDPOINT is set
            interrupted = await mark_interrupted(records, bus)
            lsp = await stack.enter_async_context(LspManager(catalog.config.lsp))
            ledger = JournaledLedger(store, bus.journal)
            client = (
                Router(catalog.config.models, ledger) if model is None else RecordedCalls(model, ledger, IN_PROCESS_KEY)
            )
            tracker = ChangeTracker(home / CHANGES_DIR, JournaledChanges(records, bus.journal.flush))
            worktrees = Worktrees(home / WORKTREES_DIR, home.parent / f"{home.name}-worktrees")
            await anyio.to_thread.run_sync(worktrees.clean_leftovers)  # a crashed hub's
            stack.push_async_callback(anyio.to_thread.run_sync, worktrees.clean_leftovers)  # after the tree
            tree, approvals = gated_tree(
                root, client, bus, catalog, store, lsp=lsp, artifacts=records, changes=tracker, worktrees=worktrees,
                hosts=hosts, transcripts=home / TRANSCRIPTS_DIR,
            )  # fmt: skip
            await stack.enter_async_context(tree)
            chats = await stack.enter_async_context(ChatService(store, tree, model=default_model))
            watching = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(watching.cancel_scope.cancel)
            watching.start_soon(_watch_config(tree.home, client, bus).run, name="config watch")
            tree.project_opened = lambda project: watching.start_soon(
                _watch_config(project, None, bus).run, name=f"config watch {project.root}"
            )
            if isinstance(client, Router):  # litellm loads in its worker while the hub opens, not at the first call
                workers = catalog.config.limits.model_workers
                watching.start_soon(start_model_worker, workers, name="model worker start")
            hub = cls(root=root, data_dir=home, lock=lock, store=store, bus=bus, tree=tree)
            hub.attach(chats, approvals, default_model=default_model, interrupted=interrupted)
            stack.push_async_callback(hub.stop, 0.0)
            await approvals.close_stale()
            await bus.journal.flush()
            hub._rows = {row.id: row for row in await records.agent_rows()}
            yield hub

    # ---- lifecycle -----------------------------------------------------------------------------

    def advertise(self, address: str) -> None:
        """Record where this hub serves (``http://HOST:PORT``) in the lock file, for other commands."""
        self.lock.advertise(address)

    @property
    def last_event_id(self) -> int:
        return self._bus.last_seq

    async def stop(self, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
        """Stop gracefully: no new work; running steps may finish for ``deadline_s``; then every
        agent still going is interrupted; everything is committed; event followers end."""
        if self.stopping:
            await self._stopped.wait()
            return
        self.stopping = True
        with anyio.CancelScope(shield=True):
            await drain(self.tree, deadline_s)
            with suppress(StoreFull):  # the journal says at close what it could not save
                await self._bus.journal.flush()
            self._bus.close_subscribers()
        self._stopped.set()

    def limits(self) -> LimitsView:
        """The hub-wide limits and their queues now."""
        return self.tree.limits.view()

    def about(self) -> HubView:
        """The projects this hub serves, the model a new chat's dispatch agent would get, and how
        its shell commands run."""
        catalog = self.tree.catalog
        picked = catalog.model_for(DEFAULT_TEMPLATE, self.default_model)
        if picked is not None and self.default_model:
            picked = DefaultModel(picked.model, "set when the hub started: dispatch serve --model, or the demo")
        stored = (row.root for row in self._rows.values() if row.root)
        projects = dict.fromkeys([str(self.root), *(str(p) for p in self.tree.projects), *stored])
        return HubView(
            root=str(self.root),
            projects=list(projects),
            default_model=picked.model if picked else None,
            default_model_source=picked.source if picked else f"no model: {no_model_hint()}",
            models=_pickable_models(catalog.config.models),
            shell=mode_in_force(catalog.config.sandbox),
        )

    async def _project(self, root: str | None) -> Project:
        """The project at ``root`` (an absolute path to a directory), opened in the tree the first
        time; None or empty: the hub's own. UserError naming the root when it is not one."""
        if root is None or not root.strip():
            return self.tree.home
        return await self.tree.open_project(await anyio.to_thread.run_sync(_project_root, root))

    async def open_project(self, root: str) -> HubView:
        """Serve the project at ``root`` too (its config read and checked now); the hub as it is then."""
        self._refuse_new_work()
        await self._project(root)
        return self.about()

    async def create_chat(
        self, title: str | None = None, root: str | None = None, caps: Caps = NO_CAPS, model: str | None = None
    ) -> ChatView:
        """A new, empty chat whose agents work in ``root`` (None: the hub's own project), each of
        its dispatch agents with ``caps`` over its template's, on ``model`` (None: the hub's default)."""
        caps.check()
        project = await self._project(root)
        home = None if project is self.tree.home else project.root
        return await self.chat_service.create_chat(title, home, caps, model)

    async def tool_servers(self) -> list[ToolServerView]:
        """The config's outside MCP servers: transport, state, tools and any pending approval."""
        return await self.tree.outside.views()

    async def wait_finished(self, agent_id: str) -> AgentView:
        """Wait until the (live) agent has stopped running: finished or interrupted."""
        await self._live(agent_id).finished.wait()
        return self._view(self._live(agent_id))

    # ---- agents --------------------------------------------------------------------------------

    def _live(self, agent_id: str) -> Agent:
        agent = self.tree.agents.get(agent_id)
        if agent is None:
            raise UnknownAgentError(f"no agent has the id {agent_id!r} in this hub run")
        return agent

    def _view(self, agent: Agent) -> AgentView:
        chat = self._recorder.chat(agent.id)
        question = self._recorder.questions.get(agent.id)
        return live_view(agent, chat_id=chat, question=question, placement=self.tree.placement_of(agent.id))

    def _row(self, agent_id: str) -> AgentRow:
        row = self._rows.get(agent_id)
        if row is None:
            raise UnknownAgentError(f"no agent has the id {agent_id!r}")
        return row

    async def _refresh(self, *agent_ids: str) -> None:
        await self._bus.journal.flush()
        for agent_id in agent_ids:
            row = await self._records.agent_row(agent_id)
            if row is not None:
                self._rows[agent_id] = row

    def _ids(self) -> list[str]:
        """Every agent's id, oldest first: of earlier runs (as stored), then of this one."""
        live = self.tree.agents
        return [*self._rows, *(i for i in live if i not in self._rows)]

    async def agents(self) -> list[AgentView]:
        """Every agent: of earlier runs (as stored) and of this one (live), oldest first, the loop
        turning every :data:`LIST_SLICE_S` of building."""
        live, ids = self.tree.agents, self._ids()
        views: list[AgentView] = []
        async for ids_slice in _slices(ids):
            for agent_id in ids_slice:
                agent = live.get(agent_id)
                views.append(self._view(agent) if agent is not None else stored_view(self._rows[agent_id]))
        return views

    async def agents_json(self) -> bytes:
        """:meth:`agents` as a JSON array, the same bytes its views would encode to. Each view's JSON
        is kept and built again only once something it shows changed, so a list of hundreds of
        agents costs a comparison per agent, and the loop turns every :data:`LIST_SLICE_S` still."""
        live, ids = self.tree.agents, self._ids()
        placements, questions, recorder = self.tree.placements, self._recorder.questions, self._recorder
        parts: list[bytes] = []
        async for ids_slice in _slices(ids):
            for agent_id in ids_slice:
                agent = live.get(agent_id)
                if agent is None:
                    row = self._rows[agent_id]
                    parts.append(self._json.get(agent_id, row, lambda row=row: stored_view(row)))
                    continue
                # the placement as the tree holds it (None until placed: the tree's engine, fixed for its life)
                facts = live_facts(
                    agent,
                    chat_id=recorder.chat(agent_id),
                    question=questions.get(agent_id),
                    placement=placements.get(agent_id),
                )
                parts.append(self._json.get(agent_id, facts, lambda agent=agent: self._view(agent)))
        return b"[" + b",".join(parts) + b"]"

    def view(self, agent_id: str) -> AgentView:
        agent = self.tree.agents.get(agent_id)
        return self._view(agent) if agent is not None else stored_view(self._row(agent_id))

    async def agent(self, agent_id: str) -> AgentDetail:
        agent = self.tree.agents.get(agent_id)
        if agent is not None:
            transcript, progress, compaction = list(agent.transcript), list(agent.progress), agent.compaction
        else:
            row = self._row(agent_id)
            transcript, progress = await self._records.transcript(agent_id), row.progress
            compaction = Compaction.model_validate_json(row.compaction) if row.compaction else None
        marks = list(compaction.marks) if compaction is not None else []
        view = self.view(agent_id).model_dump()
        return AgentDetail(**view, transcript=transcript, progress=progress, compacted_at=marks)

    async def start(
        self,
        task: str,
        *,
        template: str | None = None,
        model: str | None = None,
        detached: bool = False,
        root: str | None = None,
        caps: Caps = NO_CAPS,
    ) -> AgentView:
        """Start a top agent (not in a chat) on ``task`` in the project ``root`` (None: the hub's
        own), with ``caps`` over its template's; returns at once, once it is recorded."""
        self._refuse_new_work()
        if not task.strip():
            raise UserError("task: give the agent something to do")
        project = await self._project(root)
        name = template or DEFAULT_TEMPLATE
        chosen = model or self.default_model  # else the template's, else the config's (Catalog.model_for)
        spec = project.catalog.top_spec(task.strip(), model=chosen, template=name, caps=caps)
        if detached:
            spec = spec.model_copy(update={"detached": True})
        return self._view(await self.launch(spec))

    async def launch(self, spec: AgentSpec) -> Agent:
        """Start a top agent from a spec the caller built (``dispatch run``: its skills, ``--isolated``);
        returns it once it is recorded."""
        self._refuse_new_work()
        agent = self.tree.start(spec)
        await self._bus.journal.flush()
        return agent

    async def send(self, agent_id: str, text: str, kind: MessageKind) -> str:
        """Put a message in the agent's inbox (an interrupted one reads it when resumed); returns
        its id once committed. A ``message.delivered`` event follows when the agent reads it."""
        self._refuse_new_work()
        if kind not in USER_KINDS:
            raise UserError(f"kind: expected one of {', '.join(k.value for k in USER_KINDS)}, got {kind.value!r}")
        if not text.strip():
            raise UserError("text: a message needs some text")
        if agent_id in self.tree.agents:
            message_id = self.tree.put_message(agent_id, kind, text)
        else:
            row = self._row(agent_id)
            if row.state != AgentState.interrupted.value:
                raise UserError(f"agent {agent_id} has finished ({row.state}); it reads no more messages")
            message_id = new_id("m")
            self._bus.publish(agent_id, MessageSent(message_id=message_id, kind=kind.value, sender="user", text=text))
        await self._bus.journal.flush()
        return message_id

    async def switch_model(self, agent_id: str, model: str) -> None:
        """Use ``model`` (a tag or a model name) from the agent's next model call on."""
        if not model.strip():
            raise UserError("model: give a tag (heavy, coding, ...) or a model name")
        agent = self.tree.agents.get(agent_id)
        if agent is not None and not agent.state.terminal:
            self.tree.switch_model(agent_id, model.strip())
        elif agent is not None or self._row(agent_id).state != AgentState.interrupted.value:
            raise UserError(f"agent {agent_id} has finished ({self.view(agent_id).state}); it makes no more calls")
        else:
            self._bus.publish(agent_id, AgentModelSwitched(model=model.strip()))
        await self._refresh(agent_id)

    async def cancel(self, agent_id: str) -> AgentView:
        """Cancel the agent and its descendants (an interrupted one too: it will not resume)."""
        agent = self.tree.agents.get(agent_id)
        if agent is not None and not paused(agent):
            self.tree.cancel(agent_id)
            with anyio.move_on_after(30):
                await agent.finished.wait()
            await self._bus.journal.flush()
            return self._view(agent)
        if agent is None and self._row(agent_id).state != AgentState.interrupted.value:
            raise UserError(f"agent {agent_id} has finished ({self._row(agent_id).state}); nothing to cancel")
        await self._bus.journal.flush()
        await self._refresh(*await self._restorer.cancel(agent_id))
        return self.view(agent_id)

    async def compact(self, agent_id: str) -> AgentView:
        """Have a running agent compact what it sends its model before its next call (an
        ``agent.compacted`` event follows); its transcript is kept whole."""
        agent = self.tree.agents.get(agent_id)
        if agent is None or paused(agent):
            state = agent.state.value if agent is not None else self._row(agent_id).state
            raise UserError(f"agent {agent_id} is {state}, not running: resume it first, or start a new one")
        return self._view(self.tree.request_compaction(agent_id))

    async def resume(self, agent_id: str) -> AgentView:
        """Continue an interrupted agent (or one failed by a setup problem) from its last persisted
        step; its interrupted descendants continue from theirs. Returns at once."""
        self._refuse_new_work()
        await self._bus.journal.flush()
        agent, started = await self._restorer.resume(agent_id)
        for one in started:
            chat = self._recorder.chat(one.id)
            if chat is not None and one.spec.parent_id is None:
                self.chat_service.watch(chat, one)  # its report becomes the chat's answer
        await self._bus.journal.flush()
        return self._view(agent)

    # ---- changes to files ----------------------------------------------------------------------

    async def changes(self, agent_id: str, own: bool = False) -> AgentChanges:
        """What the agent and its descendants (``own``: the agent alone) changed in the project's files."""
        return await self._changes.changes(agent_id, own=own)

    async def rewind(self, agent_id: str, force: bool = False, undo: bool = False) -> RewindView:
        """Put back the files the agent and its descendants changed (a running agent is cancelled
        first); ``undo``: undo its last rewind. ConflictError naming the files changed since, unless ``force``."""
        return await self._changes.rewind(agent_id, force=force, undo=undo)

    # ---- events --------------------------------------------------------------------------------

    @asynccontextmanager
    async def follow_events(
        self, since: int | None = None, *, ephemeral: bool = False
    ) -> AsyncGenerator[AsyncIterator[Event]]:
        """Events with ids above ``since`` from the store, then live ones, without gap or
        duplicate (live events are committed before they are delivered, and each is passed on
        once, by id); ``since=None``: from now on; ``ephemeral``: the live ephemeral ones too
        (never stored, so never replayed). Ends when the hub stops."""
        async with self._bus.subscribe(ephemeral=ephemeral) as live:
            start = self._bus.last_seq if since is None else max(0, since)  # taken now, not when first read
            yield self._replay_then_live(live, start, replay=since is not None)

    async def _replay_then_live(
        self, live: MemoryObjectReceiveStream[Event], last: int, *, replay: bool
    ) -> AsyncGenerator[Event]:
        if replay:
            while page := await self._records.events_after(last, limit=500):
                for event in page:
                    yield event
                    last = event.seq
        if self._stopped.is_set():
            return  # a stopped hub announces nothing more
        async for event in each_queued(live):
            if event.ephemeral:  # unnumbered: it carries the seq of the event before it
                yield event
            elif event.seq > last:
                yield event
                last = event.seq


if TYPE_CHECKING:
    _CONTRACT: type[HubService] = Hub  # pyright checks that Hub has every HubService method as declared
