"""The agent: the single primitive's loop, LLM <-> MCP tools, over a spec (:mod:`dispatch.hub.agents.spec`).

Each step of the loop asks the model (with the tool schemas of the agent's mounts), runs the tool
calls it asked for concurrently through the MCP client sessions, and then drains the agent's
inbox into the transcript, so a message is read right after the next tool result. An answer
without tool calls is the agent's report, unless messages arrived meanwhile or children still run.
:class:`~dispatch.hub.agents.limits.StepCaps` stop a runaway: past ``max_steps`` (the hub's, or its
own when lower) the agent fails, and the tool calls of one answer beyond ``tool_calls_per_step``
are answered with an error, not run.
The loop is an async iterator of :class:`Step`; the tree, not the loop, announces each step.

Before each model call the agent compacts what it sends (:mod:`dispatch.hub.agents.compaction`)
when the request would pass ``models.compact_at`` of its model's window, or when asked to; when
the window is unknown and the provider refuses the request as too long, it compacts and asks once
more. The transcript itself only grows.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime

import anyio

from dispatch.hub.agents import compaction
from dispatch.hub.agents.compaction import Compaction
from dispatch.hub.agents.inbox import Inbox
from dispatch.hub.agents.limits import StepCaps
from dispatch.hub.agents.spec import AgentSpec, AgentState
from dispatch.hub.config.instructions import ProjectInstructions
from dispatch.hub.config.skills import LoadedSkill
from dispatch.hub.errors import ContextTooLong, HookBlocked, KeysExhausted, StepLimitReached
from dispatch.hub.llm.context import ContextMeter, estimate_tokens
from dispatch.hub.llm.images import images_message
from dispatch.hub.llm.types import Completion, Delta, DeltaSink, JsonDict, ModelClient, ToolCallRequest, Usage
from dispatch.hub.mounts.hooks import UserHooks
from dispatch.hub.mounts.toolset import Mounts, ToolOutcome, ToolOutput
from dispatch.servers.hublink import InboxMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolRun:
    call: ToolCallRequest
    outcome: ToolOutcome
    seconds: float


@dataclass(frozen=True)
class Step:
    """One model call and what followed it."""

    index: int
    completion: Completion
    tool_runs: list[ToolRun]
    delivered: list[InboxMessage]
    first: int = 0
    """The transcript index of the first of ``messages``."""
    messages: list[JsonDict] = field(default_factory=list[JsonDict])
    """The transcript messages added since the previous step (the first step: the whole transcript;
    a resumed agent's first: those after the one it was restored with)."""
    report: str | None = None
    """Set on the last step: the agent's report."""


@dataclass(frozen=True)
class Compacted:
    """One compaction of what an agent sends."""

    compaction: Compaction
    tokens_before: int
    tokens_after: int
    model: str | None
    """The model that wrote the summary (None: old tool results were only cut short)."""
    usage: Usage


@dataclass(frozen=True)
class CompactionSettings:
    """``models.compact_at`` and ``models.compact_model`` of the config in force."""

    compact_at: float = 0.8
    model: str | None = None


@dataclass
class AgentHooks:
    """What the agent asks of the tree it lives in."""

    live_children: Callable[[], int]
    on_state: Callable[[Agent], None]
    on_tool_call: Callable[[Agent, ToolCallRequest], None]
    on_tool_result: Callable[[Agent, ToolRun], None]
    before_report: Callable[[Agent, str], Awaitable[None]] | None = None
    """Awaited with the final answer before it becomes the report (the ``before_report``
    checkpoint); it may wait for the user, and raises to stop the agent."""
    idle: Callable[[], AbstractAsyncContextManager[None]] = nullcontext
    """Held around a wait on others (children, the user, a key): the tree gives the agent's
    running slot back meanwhile (:mod:`dispatch.hub.agents.limits`)."""
    meter: ContextMeter | None = None
    """Models' context windows and token counts (None: windows unknown, tokens estimated)."""
    compaction: Callable[[], CompactionSettings] = CompactionSettings
    on_compacted: Callable[[Agent, Compacted], None] = lambda agent, compacted: None
    children_note: Callable[[], str] = lambda: ""
    """The agent's children and their states, one line each, for a compaction's summary."""
    user_hooks: UserHooks | None = None
    """The config's hooks (:mod:`dispatch.hub.mounts.hooks`): its tool calls' are run by its mounts,
    UserPromptSubmit and Stop / SubagentStop by the loop."""
    on_delta: Callable[[Agent, int, Delta], None] | None = None
    """Part of the answer to the model call of a step (its index) as it streams in; None: calls
    do not stream."""
    streaming: Callable[[], bool] = lambda: True
    """Whether anyone follows answers and tool output as they stream (else they do not stream)."""
    on_tool_output: Callable[[Agent, ToolCallRequest, str], None] | None = None
    """Output of a running tool call as it comes (a shell command's); None: not passed on."""


@dataclass
class Agent:
    """A running (or finished) agent: its spec, state, transcript and inbox."""

    spec: AgentSpec
    hooks: AgentHooks
    state: AgentState = AgentState.pending
    reason: str = ""
    transcript: list[JsonDict] = field(default_factory=list[JsonDict])
    inbox: Inbox = field(default_factory=Inbox)
    usage: Usage = field(default_factory=Usage)
    report: str | None = None
    error: str | None = None
    progress: list[str] = field(default_factory=list[str])
    steps_taken: int = 0
    finished: anyio.Event = field(default_factory=anyio.Event)
    waiting_until: datetime | None = None
    """While ``waiting_key``: the earliest known reset of a key it may use (None: unknown)."""
    loaded_skills: list[LoadedSkill] = field(default_factory=list[LoadedSkill])
    """In loading order: those in the system prompt, then those loaded through ``load_skill``."""
    project_instructions: list[ProjectInstructions] = field(default_factory=list[ProjectInstructions])
    """The project's AGENTS.md and CLAUDE.md files its system prompt carries."""
    compaction: Compaction | None = None
    """What it sends in place of its whole transcript, since it last compacted (None: never)."""
    compact_requested: bool = False
    """Set by the user or its parent: compact before the next model call, whatever the size."""
    _measured: tuple[int, int] | None = None
    """The transcript length and the tokens of what was sent for it, as last known."""
    _ceiling: int | None = None
    """While the window is unknown: the size of a request the provider refused as too long."""

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def model(self) -> str:
        return self.spec.model

    @property
    def reads_messages(self) -> bool:
        """Not finished, and not giving its report (a message now would never be read)."""
        return not self.state.terminal and not self.inbox.closed

    def set_state(self, state: AgentState, reason: str = "") -> None:
        if self.state is state and self.reason == reason:
            return
        self.state, self.reason = state, reason
        self.hooks.on_state(self)

    def switch_model(self, model: str) -> None:
        """Takes effect at the next model call, with the transcript intact."""
        self.spec = self.spec.model_copy(update={"model": model})

    def system_prompt(self) -> str:
        """Its system prompt (:meth:`AgentSpec.system_prompt`) with what it loaded at start."""
        return self.spec.system_prompt(self.loaded_skills, self.project_instructions)

    async def _begin_transcript(self, notes: Sequence[str] = ()) -> None:
        if not self.transcript:
            system = "\n\n".join([self.system_prompt(), *notes])  # notes: e.g. the sandbox
            self.transcript.append({"role": "system", "content": system})
            self.transcript.append({"role": "user", "content": self.spec.task})
        await self._submit_task()

    async def _submit_task(self) -> None:
        """A top agent's task is the user's prompt: before its first step (its transcript new, or
        a chat's history with the task last) the config's UserPromptSubmit hooks see it, and may
        refuse it (HookBlocked) or add context to it."""
        hooks, task = self.hooks.user_hooks, self.spec.task
        last = self.transcript[-1]
        if hooks is None or self.spec.parent_id is not None or self.steps_taken or last.get("content") != task:
            return
        verdict = await hooks.user_prompt(task)
        if verdict.blocked is not None:
            raise HookBlocked(f"a UserPromptSubmit hook blocked the task: {verdict.blocked}")
        if verdict.context:
            self.transcript[-1] = {**last, "content": "\n\n".join([task, *verdict.context])}

    async def admit(self, messages: Sequence[InboxMessage]) -> list[InboxMessage]:
        """``messages`` as the agent may read them: each from the user passes the config's
        UserPromptSubmit hooks first (blocked, it is left out, the hub's log saying why; their
        context, if any, is added to its text)."""
        hooks = self.hooks.user_hooks
        if hooks is None:
            return list(messages)
        admitted: list[InboxMessage] = []
        for message in messages:
            if message.sender == "user":
                verdict = await hooks.user_prompt(message.text)
                if verdict.blocked is not None:
                    log.warning("message %s to agent %s blocked by a hook: %s", message.id, self.id, verdict.blocked)
                    continue
                if verdict.context:
                    message = message.model_copy(update={"text": "\n\n".join([message.text, *verdict.context])})
            admitted.append(message)
        return admitted

    async def _drain_inbox(self) -> list[InboxMessage]:
        """Move the waiting messages (those :meth:`admit` lets through) into the transcript."""
        delivered = await self.admit(self.inbox.take())
        for message in delivered:
            self.transcript.append({"role": "user", "content": message.render()})
        return delivered

    async def _stop_hooks(self, answer: str, active: bool) -> str | None:
        """The reason a Stop (top agent) or SubagentStop (child) hook gives to go on instead of
        reporting ``answer`` (put in the transcript for the model), or None to report it."""
        hooks = self.hooks.user_hooks
        reason = None if hooks is None else (await hooks.stop(answer, active)).blocked
        if reason is not None:
            self.transcript.append({"role": "user", "content": f"[a stop hook: do not report yet]\n{reason}"})
        return reason

    async def _run_tools(self, mounts: Mounts, calls: list[ToolCallRequest]) -> list[ToolRun]:
        runs: list[ToolRun | None] = [None] * len(calls)

        async def run_one(index: int, call: ToolCallRequest) -> None:
            self.hooks.on_tool_call(self, call)
            started = anyio.current_time()
            outcome = await mounts.call(call.name, call.arguments, self._output_sink(call), call.id)
            runs[index] = ToolRun(call, outcome, anyio.current_time() - started)
            self.hooks.on_tool_result(self, runs[index])  # type: ignore[arg-type]

        if len(calls) == 1:  # the usual case: no task to start and join
            await run_one(0, calls[0])
        else:
            async with anyio.create_task_group() as group:
                for index, call in enumerate(calls):
                    group.start_soon(run_one, index, call)
        return [run for run in runs if run is not None]

    async def _run_capped(self, mounts: Mounts, calls: list[ToolCallRequest], cap: int | None) -> list[ToolRun]:
        """Run the first ``cap`` calls; each one beyond gets a tool error instead (every call of an
        answer needs a result), so the model learns the limit and may go on in smaller steps."""
        if cap is None or len(calls) <= cap:
            return await self._run_tools(mounts, calls)
        refusal = ToolOutcome(
            f"Error: not run: one answer may make at most {cap} tool calls (limits.tool_calls_per_step) and "
            f"this one made {len(calls)}; the first {cap} ran. Make the others in later steps.",
            True,
        )
        return [*await self._run_tools(mounts, calls[:cap]), *(ToolRun(call, refusal, 0.0) for call in calls[cap:])]

    def sent(self) -> list[JsonDict]:
        """What the model is sent: the transcript as compacted (:mod:`dispatch.hub.agents.compaction`)."""
        return compaction.sent(self.transcript, self.compaction)

    async def _count(self, tools: Sequence[JsonDict], *, exact: bool) -> int:
        """The tokens of the next request: those of the last one as the provider reported them plus
        what was added since (litellm's counter when ``exact``, else a generous estimate)."""
        meter, known = self.hooks.meter, self._measured
        if known is not None and known[0] <= len(self.transcript):
            added = self.transcript[known[0] :]
            if not added:
                return known[1]
            if exact and meter is not None:
                return known[1] + await meter.count(self.model, added)
            return known[1] + estimate_tokens(added) * 4 // 3
        messages = self.sent()
        if exact and meter is not None:
            return await meter.count(self.model, messages, tools)
        return estimate_tokens(messages, tools) * 4 // 3

    async def _window(self) -> int | None:
        meter = self.hooks.meter
        return await meter.window(self.model) if meter is not None else None

    async def _limit(self) -> int | None:
        return await self._window() or self._ceiling

    async def _compact_if_due(self, model: ModelClient, tools: Sequence[JsonDict]) -> None:
        """Compact when asked to, or when the next request would pass ``compact_at`` of the window."""
        limit = await self._limit()
        if not self.compact_requested:
            if limit is None:
                return
            threshold = limit * self.hooks.compaction().compact_at
            if await self._count(tools, exact=False) < threshold:
                return
            if await self._count(tools, exact=True) < threshold:
                return
        if await self.compact(model, tools, await self._count(tools, exact=True), limit):
            self.compact_requested = False  # a request waits until there is more than the last turn

    async def compact(self, model: ModelClient, tools: Sequence[JsonDict], before: int, limit: int | None) -> bool:
        """Compact what is sent: old tool results cut short when that is enough, else the older part
        summarised by a model (charged to this agent); the transcript itself is kept whole. False
        when there is nothing before the latest turn to compact."""
        settings = self.hooks.compaction()
        size = limit or before
        planned = compaction.plan(self.transcript, self.compaction, size)
        if planned is None:
            return False
        after_shortening = estimate_tokens(compaction.sent(self.transcript, planned.shortened), tools)
        usage, writer = Usage(), None
        if limit is not None and after_shortening <= limit * settings.compact_at / 2:
            new = planned.shortened
        else:
            writer = settings.model or self.model
            summary = self.compaction.summary if self.compaction is not None else None
            for piece in compaction.pieces(self.transcript, self.compaction, planned.tail, size):
                request = compaction.summary_request(self.spec.task, summary, piece)
                written = await self._ask_plainly(model, writer, request)
                usage.add(written.usage)
                summary = written.text or ""
            kept = compaction.kept_messages(self.transcript, self.compaction, planned.tail, size)
            text = compaction.summary_message(summary or "", planned.tail, self.hooks.children_note())
            new = planned.shortened.model_copy(update={"summary": text, "summarised": planned.tail, "kept": kept})
        self.usage.add(usage)
        self.compaction = new
        self._measured = None
        after = await self._count(tools, exact=True)
        self._measured = (len(self.transcript), after)
        self.hooks.on_compacted(self, Compacted(new, before, after, writer, usage))
        if limit is not None and after >= limit:
            raise ContextTooLong(
                f"model {self.model!r}: even compacted, the transcript is {after} tokens, more than its context "
                f"window of {limit} tokens"
            )
        return True

    async def _ask_plainly(self, model: ModelClient, name: str, messages: list[JsonDict]) -> Completion:
        """A call without tools (a summary), waiting like any other while every key is exhausted."""
        while True:
            try:
                return await model.complete(name, messages, [], agent_id=self.id)
            except KeysExhausted as exhausted:
                await self._wait_for_key(exhausted)

    async def _wait_for_key(self, exhausted: KeysExhausted) -> None:
        self.waiting_until = exhausted.until
        self.set_state(AgentState.waiting_key, exhausted.reason)
        async with self.hooks.idle():
            await exhausted.wait()
        self.waiting_until = None
        self.set_state(AgentState.running)

    def _output_sink(self, call: ToolCallRequest) -> ToolOutput | None:
        """Where the output of ``call`` goes while it runs (None: nowhere)."""
        on_output = self.hooks.on_tool_output
        if on_output is None or not self.hooks.streaming():
            return None
        return lambda text: on_output(self, call, text)

    def _delta_sink(self) -> DeltaSink | None:
        """Where the next model call's answer streams to (None: it does not stream)."""
        on_delta = self.hooks.on_delta
        if on_delta is None or not self.hooks.streaming():
            return None
        step = self.steps_taken + 1  # the index of the step this call makes
        return lambda delta: on_delta(self, step, delta)

    async def _ask(self, model: ModelClient, mounts: Mounts) -> Completion:
        """One model call, compacting first when due; while every key is exhausted, wait in
        ``waiting_key`` and ask again (with the model as it is then: a switch meanwhile applies).
        Refused as too long: compact and ask once more."""
        refused: int | None = None
        while True:
            tools = mounts.tool_schemas()
            await self._compact_if_due(model, tools)
            try:
                completion = await model.complete(
                    self.model, self.sent(), tools, agent_id=self.id, on_delta=self._delta_sink()
                )
            except ContextTooLong as error:
                size, window = await self._count(tools, exact=True), await self._window()
                if refused is not None:
                    known = f"of {window} tokens" if window else "(not known: set context_window in the config)"
                    raise ContextTooLong(
                        f"model {self.model!r}: even compacted, the request is {size} tokens, more than its context "
                        f"window {known}"
                    ) from error
                refused = size
                if window is None:  # compact before this size from now on
                    self._ceiling = min(size, self._ceiling or size)
                await self.compact(model, tools, size, None)
                continue
            except KeysExhausted as exhausted:
                await self._wait_for_key(exhausted)
                continue
            if completion.usage.prompt_tokens:
                self._measured = (len(self.transcript), completion.usage.prompt_tokens)
            return completion

    async def steps(self, mounts: Mounts, model: ModelClient, caps: StepCaps | None = None) -> AsyncGenerator[Step]:
        """The loop, one model call per step, until the agent reports (or passes ``caps``)."""
        caps = (caps or StepCaps()).for_agent(self.spec.max_steps)
        announced = len(self.transcript) if self.steps_taken else 0  # a resumed agent's are stored already
        await self._begin_transcript(mounts.notes)
        held_by_hook = False  # the last answer was to be the report, and a Stop hook said go on
        while True:
            if (stop := caps.stop(self.steps_taken)) is not None:
                raise StepLimitReached(stop)
            completion = await self._ask(model, mounts)
            self.usage.add(completion.usage)
            self.steps_taken += 1
            self.transcript.append(completion.assistant_message())
            runs: list[ToolRun] = []
            if completion.tool_calls:
                runs = await self._run_capped(mounts, completion.tool_calls, caps.tool_calls_per_step)
                for run in runs:
                    self.transcript.append({"role": "tool", "tool_call_id": run.call.id, "content": run.outcome.text})
                shown = images_message([(r.call.name, r.call.id, i) for r in runs for i in r.outcome.images])
                if shown is not None:  # after every tool message: a tool result cannot carry an image everywhere
                    self.transcript.append(shown)
            elif not len(self.inbox) and self.hooks.live_children():
                count = self.hooks.live_children()
                self.set_state(AgentState.waiting_children, f"waiting for {count} children")
                async with self.hooks.idle():
                    await self.inbox.not_empty()
                self.set_state(AgentState.running)
            delivered = await self._drain_inbox()
            going_on = None
            if not (completion.tool_calls or delivered):
                going_on = await self._stop_hooks(completion.text or "", held_by_hook)
                held_by_hook = going_on is not None
            if not (completion.tool_calls or delivered or going_on) and self.hooks.before_report is not None:
                await self.hooks.before_report(self, completion.text or "")
                delivered = await self._drain_inbox()  # sent while the report waited for its approval
            first, added = announced, self.transcript[announced:]
            announced = len(self.transcript)
            if completion.tool_calls or delivered or going_on:
                yield Step(self.steps_taken, completion, runs, delivered, first, added)
                continue
            self.inbox.close()  # nothing waits, and from here on nothing could be read
            yield Step(self.steps_taken, completion, runs, delivered, first, added, report=completion.text or "")
            return
