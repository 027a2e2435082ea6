"""Hub-wide limits that protect the machine: how many agents take steps at once, and how many
model calls are in flight at once. Beyond either, work queues, and the queue shows in the API.
And what stops one runaway agent (:class:`StepCaps`): how many steps it may take (the hub's
``max_steps`` and the agent's own, the lower one), and how many tool calls one of its steps may
make; and how many processes and commands its shell may run (handed to its mounts).

An agent holds a *running* slot while it works: from its start until it reports, except while it
waits on something other than itself (its children, the user, a spent key), when it gives the
slot back and takes one again before going on. So a tree of orchestrators waiting on their
children can never fill every slot and stall: slot holders are always agents that can go on.
A *model call* slot is held for one call to the model (retries on other keys included).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import anyio

from dispatch.hub.config.project import LimitsConfig
from dispatch.hub.llm.types import Completion, DeltaSink, JsonDict, ModelClient
from dispatch.hub.views import LimitsView
from dispatch.servers.sandbox import ProcessLimits


class _Slots:
    """A counted semaphore that knows how many wait for it (any task may release)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore = anyio.Semaphore(limit, fast_acquire=True)  # a free slot: no turn of the loop
        self.waiting = 0

    @property
    def taken(self) -> int:
        return self.limit - self._semaphore.value

    def free(self) -> bool:
        return self._semaphore.value > 0

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self._semaphore.release()


class RunningSlot:
    """One agent's running slot: held while it works, given back while it waits on others."""

    def __init__(self, slots: _Slots, on_queued: Callable[[str], None]) -> None:
        self._slots = slots
        self._on_queued = on_queued
        self._held = False
        self._idle = 0  # the agent's tool calls run side by side: two may wait at once

    async def take(self) -> None:
        if not self._slots.free():
            self._on_queued(f"queued: all {self._slots.limit} running slots are taken (limits.running_agents)")
        await self._slots.acquire()
        self._held = True

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()

    @asynccontextmanager
    async def idle(self) -> AsyncGenerator[None]:
        """Give the slot back for the body (a wait on others), and take one again after it (after
        the last of several overlapping waits). When the body raises (the agent is stopping), the
        slot stays given back."""
        self._idle += 1
        if self._idle == 1:
            self.give_back()
        try:
            yield
        finally:
            self._idle -= 1
        if self._idle == 0 and not self._held:
            await self.take()


@dataclass(frozen=True)
class StepCaps:
    """What one agent may do before it is stopped (the config's ``limits``; None: no cap), and
    the agent's own ``max_steps`` (its spec's: :meth:`for_agent`). The lower step cap applies."""

    max_steps: int | None = None
    tool_calls_per_step: int | None = None
    own_steps: int | None = None
    """The agent's own ``max_steps`` (from its template, the user or ``summon``); None: only the hub's."""

    def for_agent(self, own_steps: int | None) -> StepCaps:
        """These caps with the agent's own ``max_steps``."""
        return replace(self, own_steps=own_steps)

    def stop(self, steps_taken: int) -> str | None:
        """Why an agent that has taken ``steps_taken`` steps may take no more (naming the cap that
        stopped it and how to raise it), or None while it may go on."""
        hub, own = self.max_steps, self.own_steps
        if own is not None and (hub is None or own < hub) and steps_taken >= own:
            higher = f"; the hub's limits.max_steps is {hub}" if hub is not None else ""
            return (
                f"stopped after {steps_taken} steps without a report (its own max_steps is {own}{higher}): "
                "give it a higher max_steps (dispatch run --max-steps, the request's or summon's max_steps, "
                "or its template's) if the task needs more"
            )
        if hub is not None and steps_taken >= hub:
            return (
                f"stopped after {steps_taken} steps without a report (limits.max_steps is {hub}): raise it in "
                "the config if the task needs more"
            )
        return None


class Limits:
    """The hub's limits; one per hub, handed to its tree."""

    def __init__(self, config: LimitsConfig | None = None) -> None:
        config = config or LimitsConfig()
        self._agents = _Slots(config.running_agents)
        self._calls = _Slots(config.model_calls)
        self.step_caps = StepCaps(config.max_steps, config.tool_calls_per_step)
        """Each agent's, read when the hub starts like the rest of the section."""
        processes = config.processes
        self.processes = ProcessLimits(processes.total, processes.agent, processes.command)
        """How many processes shell commands may have: the hub's, an agent's, a command's."""
        self.commands_per_agent = config.commands_per_agent

    def view(self) -> LimitsView:
        return LimitsView(
            running_agents=self._agents.taken,
            running_agents_limit=self._agents.limit,
            queued_agents=self._agents.waiting,
            model_calls=self._calls.taken,
            model_calls_limit=self._calls.limit,
            queued_model_calls=self._calls.waiting,
        )

    @asynccontextmanager
    async def running(self, on_queued: Callable[[str], None]) -> AsyncGenerator[RunningSlot]:
        """Hold a running slot for the body; ``on_queued(reason)`` first when none is free."""
        slot = RunningSlot(self._agents, on_queued)
        await slot.take()
        try:
            yield slot
        finally:
            slot.give_back()

    def capped(self, model: ModelClient) -> ModelClient:
        """``model`` with every call holding a model-call slot."""
        return _CappedModel(model, self._calls)


class _CappedModel:
    """A ModelClient whose calls wait for a slot of the hub's model-call limit."""

    def __init__(self, inner: ModelClient, slots: _Slots) -> None:
        self._inner = inner
        self._slots = slots

    async def complete(
        self,
        model: str,
        messages: Sequence[JsonDict],
        tools: Sequence[JsonDict],
        *,
        agent_id: str | None = None,
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        await self._slots.acquire()
        try:
            return await self._inner.complete(model, messages, tools, agent_id=agent_id, on_delta=on_delta)
        finally:
            self._slots.release()
