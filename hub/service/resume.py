"""Crash-safe resume: what a dead hub left running is marked ``interrupted``; an interrupted agent
is rebuilt from the store and continues from its last persisted step (and, if it compacted, sends
what it sent then: its last compaction record, never the whole transcript).

On open, :func:`mark_interrupted` finds every agent whose stored state is not final (running,
pending, waiting) and publishes its change to ``interrupted`` (so the event log says so too), with
the step it stopped after.

:meth:`Restorer.resume` puts an interrupted agent back in the tree: its transcript, usage, step
count, progress notes, and the messages it had not read by its last persisted step (back in its
inbox). Its subtree comes with it: interrupted descendants run again from their own last steps,
finished ones are registered as they ended (so ``children``, ``wait`` and reports work), and its
ancestors are registered, paused, so that its report reaches its parent's inbox, to be read
when that one is resumed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio

from dispatch.hub.agents.compaction import Compaction
from dispatch.hub.agents.loop import Agent
from dispatch.hub.agents.spec import AgentState, resumable
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.errors import UnknownAgentError, UserError
from dispatch.hub.events import AgentStateChanged, EventBus
from dispatch.hub.llm.types import Usage
from dispatch.hub.store.journal import Recorder
from dispatch.hub.store.records import AgentRow, Records


async def mark_interrupted(records: Records, bus: EventBus) -> list[str]:
    """Mark the agents a dead hub left unfinished as ``interrupted``; returns their ids."""
    rows = await records.unfinished()
    for row in rows:
        reason = f"the hub stopped while it was {row.state}, after step {row.steps}; resume it to continue"
        bus.publish(row.id, AgentStateChanged(state=AgentState.interrupted.value, reason=reason, steps=row.steps))
    return [row.id for row in rows]


def paused(agent: Agent) -> bool:
    """A resumable agent of the tree that is not running (registered from the store, or stopped)."""
    return resumable(agent.state.value, agent.reason) and agent.finished.is_set()


class Restorer:
    """Rebuilds interrupted agents of one tree from the store."""

    def __init__(self, tree: AgentTree, records: Records, recorder: Recorder) -> None:
        self._tree = tree
        self._records = records
        self._recorder = recorder

    async def resume(self, agent_id: str) -> tuple[Agent, list[Agent]]:
        """Resume the agent and its interrupted descendants; returns it and every agent started."""
        row = await self._records.agent_row(agent_id)
        if row is None:
            raise UnknownAgentError(f"no agent has the id {agent_id!r}")
        live = self._tree.agents.get(agent_id)
        state = live.state.value if live is not None else row.state
        reason = live.reason if live is not None else row.reason
        if (live is not None and not paused(live)) or not resumable(state, reason):
            raise UserError(
                f"agent {agent_id} is {state}; only an interrupted agent, or one failed by a setup problem "
                "(a key, the config), can be resumed"
            )
        if row.root is not None:  # it goes on in its own project, which this hub serves too
            if not await anyio.Path(row.root).is_dir():
                raise UserError(f"agent {agent_id} worked in {row.root}, which is no longer a directory")
            await self._tree.open_project(Path(row.root))
        plan = [(a, False) for a in await self._ancestors(row) if a.id not in self._tree.agents]
        for member in await self._records.subtree(agent_id):
            present = self._tree.agents.get(member.id)
            if present is None or paused(present):
                plan.append((member, resumable(member.state, member.reason)))
        restorers = [(member, run, await self._restorer(member, run)) for member, run in plan]
        started: list[Agent] = []
        for member, run, restore in restorers:  # no await from here on: the whole subtree is linked
            spec = (
                member.spec
                if member.spec.root or not member.root
                else member.spec.model_copy(update={"root": member.root})
            )
            agent = self._tree.start(spec, restore=restore, run=run, chat_id=member.chat_id)  # before any runs
            if run:
                started.append(agent)
        return self._tree.agents[agent_id], started

    async def cancel(self, agent_id: str) -> list[str]:
        """Cancel an interrupted agent that is not running, and its interrupted descendants, so
        they never resume; returns the ids looked at."""
        below = await self._records.subtree(agent_id)
        for row in below:
            live = self._tree.agents.get(row.id)
            if live is not None and paused(live):
                self._tree.cancel(row.id)
            elif live is None and row.state == AgentState.interrupted.value:
                cancelled = AgentStateChanged(state=AgentState.cancelled.value, reason="cancelled")
                self._tree.events.publish(row.id, cancelled)
        return [row.id for row in below]

    async def _ancestors(self, row: AgentRow) -> list[AgentRow]:
        """The agent's ancestors, the top one first."""
        chain: list[AgentRow] = []
        parent_id = row.parent_id
        while parent_id is not None:
            parent = await self._records.agent_row(parent_id)
            if parent is None:
                break
            chain.insert(0, parent)
            parent_id = parent.parent_id
        return chain

    async def _restorer(self, row: AgentRow, run: bool) -> Callable[[Agent], None]:
        """What rebuilds the agent of ``row``, read from the store now, applied when it starts."""
        transcript = await self._records.transcript(row.id)
        unread = await self._records.unread_messages(row.id, row.steps)

        def restore(agent: Agent) -> None:
            agent.transcript = transcript
            agent.usage = Usage(
                prompt_tokens=row.tokens_in,
                completion_tokens=row.tokens_out,
                cache_read_tokens=row.cache_read_tokens,
                cache_write_tokens=row.cache_write_tokens,
                cost_usd=row.cost_usd,
            )
            agent.steps_taken = row.steps
            agent.report, agent.progress = row.report, list(row.progress)
            if row.compaction:  # it sends what it sent before it stopped, never the whole transcript
                agent.compaction = Compaction.model_validate_json(row.compaction)
            agent.error = None if run else row.error  # a setup failure resumed: its error is over
            agent.state = AgentState.pending if run else AgentState(row.state)
            agent.reason = "resuming from its last step" if run else row.reason
            for message in unread:
                agent.inbox.put(message)

            self._recorder.chat_of[row.id] = row.chat_id
            if row.question:
                self._recorder.questions[row.id] = row.question

        return restore
