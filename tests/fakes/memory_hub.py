"""An in-memory :class:`~dispatch.hub.service.contract.HubService` for the API's tests: every method of the
contract, honest about its errors (unknown ids raise ``NotFoundError``, bad input ``UserError``),
with events that have monotonic ``seq`` numbers and ``follow_events(since)`` replay.

No agent runs here: an agent started is ``running`` until the test says otherwise
(:meth:`MemoryHub.finish`); a message sent to it is delivered at once (a ``message.delivered``
event) as if its next tool boundary had come.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from dispatch.hub.agents.limits import Limits
from dispatch.hub.errors import NotFoundError, UnknownAgentError, UserError
from dispatch.hub.events import (
    AgentModelSwitched,
    AgentQuestion,
    AgentSpawned,
    AgentStateChanged,
    ApprovalResolved,
    Event,
    EventData,
    MessageDelivered,
    MessageSent,
)
from dispatch.hub.service.threads import ThreadDetail, ThreadMessageView, ThreadView
from dispatch.hub.views import (
    AgentDetail,
    AgentView,
    ApprovalView,
    ArtifactView,
    ChatDetail,
    ChatMessageView,
    ChatView,
    Decision,
    LimitsView,
    Remember,
    ToolServerView,
    UsageView,
)
from dispatch.servers.hublink import USER_KINDS, MessageKind

TERMINAL = ("done", "failed", "cancelled")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _time(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"{name} {value!r} is not an ISO date or time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class MemoryHub:
    """The contract over dicts. ``approvals`` and ``artifacts`` are filled by the test."""

    def __init__(self) -> None:
        self._agents: dict[str, AgentDetail] = {}
        self._chats: dict[str, ChatView] = {}
        self._messages: dict[str, list[ChatMessageView]] = {}
        self.approvals_by_id: dict[str, ApprovalView] = {}
        self.artifacts_by_id: dict[str, ArtifactView] = {}
        self.outside_servers: list[ToolServerView] = []
        """What ``tool_servers`` answers (the web UI's tests put servers here)."""
        self._threads: dict[str, list[ThreadMessageView]] = {}
        self._events: list[Event] = []
        self._followers: list[MemoryObjectSendStream[Event]] = []
        self._ids = 0

    # -- helpers for tests ---------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}{self._ids}"

    def publish(self, agent_id: str, data: EventData) -> Event:
        event = Event(seq=len(self._events) + 1, at=time.time(), agent_id=agent_id, data=data)
        self._events.append(event)
        for stream in list(self._followers):
            stream.send_nowait(event)
        return event

    def finish(self, agent_id: str, state: str = "done", report: str = "finished") -> None:
        self._update(agent_id, state=state, report=report if state == "done" else None)
        self.publish(agent_id, AgentStateChanged(state=state, reason=""))

    def _get(self, agent_id: str) -> AgentDetail:
        try:
            return self._agents[agent_id]
        except KeyError:
            raise UnknownAgentError(f"no agent has the id {agent_id!r}") from None

    def _update(self, agent_id: str, **changes: Any) -> AgentDetail:
        self._agents[agent_id] = self._get(agent_id).model_copy(update=changes)
        return self._agents[agent_id]

    @staticmethod
    def _view(detail: AgentDetail) -> AgentView:
        return AgentView.model_validate(detail.model_dump(exclude={"transcript", "progress"}))

    # -- agents --------------------------------------------------------------------------------

    async def agents(self) -> list[AgentView]:
        return [self._view(a) for a in self._agents.values()]

    async def agent(self, agent_id: str) -> AgentDetail:
        return self._get(agent_id)

    async def start(
        self, task: str, *, template: str | None = None, model: str | None = None, detached: bool = False
    ) -> AgentView:
        if template not in (None, "dispatch", "worker"):
            raise UserError(f"no template is named {template!r}")
        agent_id = self._id("a")
        self._agents[agent_id] = AgentDetail(
            id=agent_id, parent_id=None, name=template or "dispatch", template=template or "dispatch", task=task,
            state="running", reason="", model=model or "openai/scripted", scope=[], detached=detached,
            tokens_in=0, tokens_out=0, cost_usd=0.0, steps=0, report=None, error=None,
            transcript=[{"role": "user", "content": task}], progress=[],
        )  # fmt: skip
        detail = self._agents[agent_id]
        spawned = AgentSpawned(
            parent_id=None, name=detail.name, template=detail.template, model=detail.model, task=task, scope=[],
            detached=detached, skills=[],
        )  # fmt: skip
        self.publish(agent_id, spawned)
        if detached:
            self._threads[agent_id] = []
        return self._view(self._agents[agent_id])

    async def send(self, agent_id: str, text: str, kind: MessageKind) -> str:
        agent = self._get(agent_id)
        if kind not in USER_KINDS:
            raise UserError(f"kind {kind.value!r} is not one a user may send")
        if agent.state in TERMINAL:
            raise UserError(f"agent {agent_id} has finished ({agent.state}); it reads no more messages")
        message_id = self._id("m")
        self.publish(agent_id, MessageSent(message_id=message_id, kind=kind.value, sender="user", text=text))
        self._update(agent_id, transcript=[*agent.transcript, {"role": "user", "content": text}])
        self.publish(agent_id, MessageDelivered(message_id=message_id, step=agent.steps + 1))
        return message_id

    async def switch_model(self, agent_id: str, model: str) -> None:
        self._update(agent_id, model=model)
        self.publish(agent_id, AgentModelSwitched(model=model))

    async def cancel(self, agent_id: str) -> AgentView:
        agent = self._get(agent_id)
        if agent.state not in TERMINAL:
            agent = self._update(agent_id, state="cancelled", reason="cancelled")
            self.publish(agent_id, AgentStateChanged(state="cancelled", reason="cancelled"))
        return self._view(agent)

    async def resume(self, agent_id: str) -> AgentView:
        agent = self._get(agent_id)
        if agent.state != "interrupted":
            raise UserError(f"agent {agent_id} is {agent.state}, not interrupted; only an interrupted agent resumes")
        self.publish(agent_id, AgentStateChanged(state="running", reason="resumed"))
        return self._view(self._update(agent_id, state="running", reason="resumed"))

    # -- chats ---------------------------------------------------------------------------------

    def _chat(self, chat_id: str) -> ChatView:
        try:
            return self._chats[chat_id]
        except KeyError:
            raise NotFoundError(f"no chat has the id {chat_id!r}") from None

    async def create_chat(self, title: str | None = None) -> ChatView:
        chat_id, now = self._id("c"), _now()
        chat = ChatView(id=chat_id, title=title or "", created_at=now, updated_at=now, forked_from=None, agent_id=None)
        self._chats[chat_id], self._messages[chat_id] = chat, []
        return chat

    async def chats(
        self, query: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[ChatView]:
        start = _time(since, "since") if since else None
        end = _time(until, "until") if until else None
        found: list[ChatView] = []
        for chat in self._chats.values():
            updated = _time(chat.updated_at, "updated_at")
            text = " ".join([chat.title, *(m.text for m in self._messages[chat.id])]).lower()
            if (start and updated < start) or (end and updated >= end) or (query and query.lower() not in text):
                continue
            found.append(chat)
        return sorted(found, key=lambda c: c.updated_at, reverse=True)

    async def chat(self, chat_id: str) -> ChatDetail:
        return ChatDetail(**self._chat(chat_id).model_dump(), messages=list(self._messages[chat_id]))

    async def post_chat_message(self, chat_id: str, text: str) -> ChatMessageView:
        chat, history = self._chat(chat_id), self._messages[chat_id]
        message = ChatMessageView(
            id=self._id("cm"), chat_id=chat_id, parent_id=history[-1].id if history else None, role="user",
            text=text, agent_id=None, created_at=_now(),
        )  # fmt: skip
        history.append(message)
        self._chats[chat_id] = chat.model_copy(update={"updated_at": message.created_at, "title": chat.title or text})
        return message

    async def fork_chat(self, chat_id: str, message_id: str) -> ChatView:
        history = self._messages[self._chat(chat_id).id]
        cut = next((i for i, m in enumerate(history) if m.id == message_id), None)
        if cut is None:
            raise NotFoundError(f"chat {chat_id} has no message {message_id!r}")
        fork = await self.create_chat(self._chats[chat_id].title)
        self._chats[fork.id] = fork = fork.model_copy(update={"forked_from": f"{chat_id}:{message_id}"})
        self._messages[fork.id] = list(history[: cut + 1])
        return fork

    # -- detached agents' threads --------------------------------------------------------------

    def ask(self, agent_id: str, question: str) -> None:
        """The detached agent asks the user (its ``ask_user``) and waits."""
        self._threads[agent_id].append(
            ThreadMessageView(id=self._id("t"), agent_id=agent_id, role="agent", text=question, created_at=_now())
        )
        self._update(agent_id, state="waiting_user", reason="waiting for the user", question=question)
        self.publish(agent_id, AgentQuestion(question=question))

    def _thread_view(self, agent_id: str) -> ThreadView:
        agent = self._get(agent_id)
        return ThreadView(
            agent_id=agent_id, name=agent.name, parent_id=agent.parent_id, task=agent.task, created_at=_now(),
            state=agent.state, question=agent.question,
        )  # fmt: skip

    def _thread(self, agent_id: str) -> list[ThreadMessageView]:
        if agent_id not in self._threads:
            raise NotFoundError(f"agent {agent_id!r} has no user thread (only detached agents have one)")
        return self._threads[agent_id]

    async def threads(self) -> list[ThreadView]:
        return [self._thread_view(agent_id) for agent_id in self._threads]

    async def thread(self, agent_id: str) -> ThreadDetail:
        messages = list(self._thread(agent_id))
        return ThreadDetail(**self._thread_view(agent_id).model_dump(), messages=messages)

    async def answer_thread(self, agent_id: str, text: str) -> ThreadMessageView:
        thread = self._thread(agent_id)
        message_id = await self.send(agent_id, text, MessageKind.instruction)
        answer = ThreadMessageView(
            id=self._id("t"), agent_id=agent_id, role="user", text=text, message_id=message_id, created_at=_now()
        )
        thread.append(answer)
        self._update(agent_id, state="running", reason="", question=None)
        return answer

    # -- approvals, artifacts, usage -----------------------------------------------------------

    async def approvals(self, state: str | None = "pending") -> list[ApprovalView]:
        if state not in (None, "pending", "approved", "denied"):
            raise UserError(f"state {state!r} is not pending, approved or denied")
        return [a for a in self.approvals_by_id.values() if state is None or a.state == state]

    async def answer_approval(self, approval_id: str, decision: Decision, remember: Remember) -> ApprovalView:
        approval = self.approvals_by_id.get(approval_id)
        if approval is None:
            raise NotFoundError(f"no approval has the id {approval_id!r}")
        if approval.state != "pending":
            raise UserError(f"approval {approval_id} was answered already ({approval.state})")
        state = "approved" if decision == "approve" else "denied"
        self.approvals_by_id[approval_id] = approval = approval.model_copy(update={"state": state})
        resolved = ApprovalResolved(approval_id=approval_id, state=state, decided_by="user", remember=remember)
        self.publish(approval.agent_id, resolved)
        return approval

    async def artifacts(self, query: str | None = None, kind: str | None = None) -> list[ArtifactView]:
        return [
            a.model_copy(update={"content": None})
            for a in self.artifacts_by_id.values()
            if (kind is None or a.kind == kind) and (query is None or query.lower() in f"{a.title} {a.content}".lower())
        ]

    async def artifact(self, artifact_id: str) -> ArtifactView:
        if artifact_id not in self.artifacts_by_id:
            raise NotFoundError(f"no artifact has the id {artifact_id!r}")
        return self.artifacts_by_id[artifact_id]

    async def usage(self) -> UsageView:
        total = {"tokens_in": 0.0, "tokens_out": 0.0, "cost_usd": 0.0, "calls": 0.0}
        return UsageView(total=total, by_agent={}, by_key={}, by_model={}, by_day={})

    def limits(self) -> LimitsView:
        return Limits().view()

    async def tool_servers(self) -> list[ToolServerView]:
        return list(self.outside_servers)

    # -- events --------------------------------------------------------------------------------

    @asynccontextmanager
    async def follow_events(self, since: int | None = None) -> AsyncGenerator[AsyncIterator[Event]]:
        send, receive = anyio.create_memory_object_stream[Event](max_buffer_size=math.inf)
        since = len(self._events) if since is None else since
        backlog = [e for e in self._events if e.seq > since]
        self._followers.append(send)

        async def events() -> AsyncIterator[Event]:
            last = since
            for event in backlog:
                last = event.seq
                yield event
            async for event in receive:
                if event.seq > last:
                    last = event.seq
                    yield event

        try:
            yield events()
        finally:
            self._followers.remove(send)
            send.close()
            receive.close()

    async def close(self) -> None:
        """End every follower's stream, as the real hub does when it shuts down."""
        for stream in self._followers:
            stream.close()
