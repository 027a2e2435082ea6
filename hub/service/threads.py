"""Detached agents' user threads: an agent's questions (``ask_user``) and the user's answers.

A detached agent (``summon(detached=true)``, a detached template, or a detached top agent) gets a
thread when it is spawned, kept by the store under the agent's id, so it can be read after the
agent, or the hub, is gone. Its ``ask_user`` adds the question to the thread and leaves the agent
``waiting_user``; :meth:`AgentThreads.answer` records the user's answer and puts it in the agent's
inbox (kind ``instruction``), which ends the wait: ``ask_user`` returns it. Other agents go on
meanwhile; when the agent is done it reports to its parent as usual.

:meth:`AgentThreads.follow` records threads and questions from the tree's events (``agent.spawned``
with ``detached``, ``agent.question``); run it for as long as the tree runs.
"""

from __future__ import annotations

import logging

import anyio
from anyio.abc import TaskStatus

from dispatch.hub import times
from dispatch.hub.agents.spec import AgentState
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.errors import NotFoundError, UserError
from dispatch.hub.events import AgentQuestion, AgentSpawned, Event
from dispatch.hub.ids import new_id
from dispatch.hub.store.db import Row, Store
from dispatch.hub.views import ThreadDetail, ThreadMessageView, ThreadView
from dispatch.servers.hublink import MessageKind

log = logging.getLogger(__name__)


class AgentThreads:
    """The user threads of one hub's detached agents, persisted in ``store``."""

    def __init__(self, store: Store, tree: AgentTree) -> None:
        self._store = store
        self._tree = tree

    async def follow(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Record threads from the tree's events until cancelled (``await group.start(follow)``:
        it is subscribed when ``start`` returns, so nothing published after that is missed)."""
        async with self._tree.events.subscribe(kinds=(AgentSpawned, AgentQuestion)) as stream:
            task_status.started()
            async for event in stream:
                try:
                    await self._record(event)
                except Exception:  # one bad write must not end the recording of every thread
                    log.exception("recording %s of agent %s in its thread failed", event.type, event.agent_id)

    async def _record(self, event: Event) -> None:
        match event.data:
            case AgentSpawned(detached=True) as spawned:
                await self._open(event.agent_id, event.at, spawned)
            case AgentQuestion(question=question):
                if await self._store.thread_row(event.agent_id) is None:
                    await self._open(event.agent_id, event.at)
                row: Row = {
                    "id": new_id("t"),
                    "agent_id": event.agent_id,
                    "role": "agent",
                    "text": question,
                    "created_at": event.at,
                }
                await self._store.add_thread_message(row)
            case _:
                pass

    async def _open(self, agent_id: str, at: float, spawned: AgentSpawned | None = None) -> None:
        """Open the agent's thread, described by its spawn event (or, without one, by the live tree)."""
        if spawned is not None:
            name, parent, task = spawned.name, spawned.parent_id, spawned.task
        else:
            agent = self._tree.agents.get(agent_id)
            name = agent.spec.name if agent else agent_id
            parent, task = (agent.spec.parent_id, agent.spec.task) if agent else (None, "")
        row: Row = {"agent_id": agent_id, "name": name, "parent_id": parent, "task": task, "created_at": at}
        await self._store.add_thread(row)

    def _view(self, row: Row, messages: list[Row]) -> ThreadView:
        agent = self._tree.agents.get(str(row["agent_id"]))
        question = None
        if (
            agent is not None
            and agent.state is AgentState.waiting_user
            and messages
            and messages[-1]["role"] == "agent"
        ):
            question = str(messages[-1]["text"])
        return ThreadView(
            agent_id=row["agent_id"],
            name=row["name"],
            parent_id=row["parent_id"],
            task=row["task"],
            created_at=row["created_at"],
            state=agent.state.value if agent is not None else None,
            question=question,
        )

    async def threads(self) -> list[ThreadView]:
        """Every thread, newest first, without messages."""
        rows = await self._store.thread_rows()
        return [self._view(row, await self._store.thread_messages(row["agent_id"])) for row in rows]

    async def _thread_row(self, agent_id: str) -> Row:
        """The thread's row; opened now for a live detached agent whose spawn event is not recorded
        yet. NotFoundError for an agent without a thread."""
        row = await self._store.thread_row(agent_id)
        agent = self._tree.agents.get(agent_id)
        if row is None and agent is not None and agent.spec.detached:
            await self._open(agent_id, times.now())
            row = await self._store.thread_row(agent_id)
        if row is None:
            raise NotFoundError(f"agent {agent_id!r} has no user thread (only detached agents have one)")
        return row

    async def thread(self, agent_id: str) -> ThreadDetail:
        """One agent's thread with its messages, oldest first. NotFoundError for an agent without one."""
        row = await self._thread_row(agent_id)
        messages = await self._store.thread_messages(agent_id)
        view = self._view(row, messages)
        return ThreadDetail(**view.model_dump(), messages=[ThreadMessageView.model_validate(m) for m in messages])

    async def answer(self, agent_id: str, text: str) -> ThreadMessageView:
        """The user's answer (or any message) in the agent's thread: put in its inbox, which ends
        its ``ask_user`` wait, and recorded. UserError when the agent has finished or is not in
        this hub run; NotFoundError when it has no thread."""
        text = text.strip()
        if not text:
            raise UserError("an answer needs some text")
        await self._thread_row(agent_id)
        if agent_id not in self._tree.agents:
            raise UserError(f"agent {agent_id} is not running in this hub (resume it first)")
        if self._tree.agents[agent_id].state is AgentState.interrupted:
            raise UserError(f"agent {agent_id} is interrupted; resume it before answering")
        message_id = self._tree.put_message(agent_id, MessageKind.instruction, text, sender="user")
        row: Row = {
            "id": new_id("t"),
            "agent_id": agent_id,
            "role": "user",
            "text": text,
            "message_id": message_id,
            "created_at": times.now(),
        }
        await self._store.add_thread_message(row)
        return ThreadMessageView.model_validate(row)
