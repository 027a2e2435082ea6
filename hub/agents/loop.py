"""The agent: the single primitive's loop, LLM <-> MCP tools, over a spec (:mod:`dispatch.hub.agents.spec`).

Each step of the loop asks the model (with the tool schemas of the agent's mounts), runs the tool
calls it asked for concurrently through the MCP client sessions, and then drains the agent's
inbox into the transcript, so a message is read right after the next tool result. An answer
without tool calls is the agent's report, unless messages arrived meanwhile or children still run.
:class:`~dispatch.hub.agents.limits.StepCaps` stop a runaway: past ``max_steps`` (the hub's, or its
own when lower) the agent fails, and the tool calls of one answer beyond ``tool_calls_per_step``
are answered with an error, not run.
The loop is an async iterator of :class:`Step`; the tree, not the loop, announces each step.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime

import anyio

from dispatch.hub.agents.inbox import Inbox
from dispatch.hub.agents.limits import StepCaps
from dispatch.hub.agents.spec import AgentSpec, AgentState
from dispatch.hub.config.skills import LoadedSkill
from dispatch.hub.errors import KeysExhausted, StepLimitReached
from dispatch.hub.llm.types import Completion, JsonDict, ModelClient, ToolCallRequest, Usage
from dispatch.hub.mounts.toolset import Mounts, ToolOutcome
from dispatch.servers.hublink import InboxMessage


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

    def _begin_transcript(self, notes: Sequence[str] = ()) -> None:
        if not self.transcript:
            system = "\n\n".join([self.spec.system_prompt(self.loaded_skills), *notes])  # notes: e.g. the sandbox
            self.transcript.append({"role": "system", "content": system})
            self.transcript.append({"role": "user", "content": self.spec.task})

    def _drain_inbox(self) -> list[InboxMessage]:
        delivered = self.inbox.take()
        for message in delivered:
            self.transcript.append({"role": "user", "content": message.render()})
        return delivered

    async def _run_tools(self, mounts: Mounts, calls: list[ToolCallRequest]) -> list[ToolRun]:
        runs: list[ToolRun | None] = [None] * len(calls)

        async def run_one(index: int, call: ToolCallRequest) -> None:
            self.hooks.on_tool_call(self, call)
            started = anyio.current_time()
            outcome = await mounts.call(call.name, call.arguments)
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

    async def _ask(self, model: ModelClient, mounts: Mounts) -> Completion:
        """One model call; while every key is exhausted, wait in ``waiting_key`` and ask again
        (with the model as it is then: a switch meanwhile applies), the transcript untouched."""
        while True:
            try:
                return await model.complete(self.model, self.transcript, mounts.tool_schemas(), agent_id=self.id)
            except KeysExhausted as exhausted:
                self.waiting_until = exhausted.until
                self.set_state(AgentState.waiting_key, exhausted.reason)
                async with self.hooks.idle():
                    await exhausted.wait()
                self.waiting_until = None
                self.set_state(AgentState.running)

    async def steps(self, mounts: Mounts, model: ModelClient, caps: StepCaps | None = None) -> AsyncGenerator[Step]:
        """The loop, one model call per step, until the agent reports (or passes ``caps``)."""
        caps = (caps or StepCaps()).for_agent(self.spec.max_steps)
        announced = len(self.transcript) if self.steps_taken else 0  # a resumed agent's are stored already
        self._begin_transcript(mounts.notes)
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
            elif not len(self.inbox) and self.hooks.live_children():
                count = self.hooks.live_children()
                self.set_state(AgentState.waiting_children, f"waiting for {count} children")
                async with self.hooks.idle():
                    await self.inbox.not_empty()
                self.set_state(AgentState.running)
            delivered = self._drain_inbox()
            if not (completion.tool_calls or delivered) and self.hooks.before_report is not None:
                await self.hooks.before_report(self, completion.text or "")
                delivered = self._drain_inbox()  # sent while the report waited for its approval
            first, added = announced, self.transcript[announced:]
            announced = len(self.transcript)
            if completion.tool_calls or delivered:
                yield Step(self.steps_taken, completion, runs, delivered, first, added)
                continue
            self.inbox.close()  # nothing waits, and from here on nothing could be read
            yield Step(self.steps_taken, completion, runs, delivered, first, added, report=completion.text or "")
            return
