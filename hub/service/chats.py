"""Dispatch chats: persisted conversations with the dispatch agent; listed, searched, continued, forked.

A chat is a chain of messages, each linked to the one before (``parent_id``); the chat points at its
last one (``head_id``). Forking at message M makes a new chat whose head is M: both chats share the
history up to M, the original is unchanged, and no agent is copied. A user message goes to the
chat's dispatch agent: while one runs it gets the message in its inbox (kind ``instruction``);
otherwise a new top agent starts (template ``dispatch``), its transcript seeded with the chat's
earlier user and assistant turns, and its report becomes the assistant message. A chat loaded
from an earlier hub run therefore brings back its history only: its old agents are not revived.
A chat may carry caps (``budget_usd``, ``max_tokens``, ``max_steps``): each dispatch agent it
starts gets them, over its template's; a fork keeps them.

Search is full text (FTS5) over the title and every message of a chat's history (a fork's shared
messages included); ``since`` / ``until`` filter on the last update. Detached agents' user threads
(:mod:`dispatch.hub.service.threads`) are reached through :attr:`ChatService.threads` and its shortcuts.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

from dispatch.hub import times
from dispatch.hub.agents.catalog import DEFAULT_TEMPLATE, Catalog
from dispatch.hub.agents.loop import Agent
from dispatch.hub.agents.spec import NO_CAPS, AgentSpec, AgentState, Caps
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.errors import NotFoundError, UserError
from dispatch.hub.ids import new_id
from dispatch.hub.service.threads import AgentThreads, ThreadDetail, ThreadMessageView, ThreadView
from dispatch.hub.store.db import Row, Store
from dispatch.hub.views import ChatDetail, ChatMessageView, ChatView
from dispatch.servers.hublink import MessageKind

TITLE_CHARS = 80
CAPS = ("budget_usd", "max_tokens", "max_steps")
"""A chat's caps: those of each dispatch agent it starts (its row's columns, the views' fields)."""


def _moment(value: str | None, field: str) -> float | None:
    """An ISO date or date-time as the store keeps times (seconds); naive times are taken as UTC."""
    if value is None or not value.strip():
        return None
    try:
        return times.seconds(value)
    except ValueError:
        raise UserError(
            f"{field}: expected an ISO 8601 date or date-time (2026-01-31, 2026-01-31T14:00), got {value!r}"
        ) from None


def _title(text: str) -> str:
    line = text.strip().splitlines()[0].strip()
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


class ChatService:
    """The dispatch chats of one hub.

    ``ChatService(store, tree, model=None, template="dispatch", catalog=None)``: ``store`` keeps
    the chats, ``tree`` runs their dispatch agents, ``model`` is the model (tag or name) for those
    agents when the template names none, ``catalog`` builds their specs (the tree's by default).
    Enter it (``async with``) while the tree runs: it watches each dispatch agent to turn its
    report into the assistant message, and records detached agents' threads.
    """

    def __init__(
        self,
        store: Store,
        tree: AgentTree,
        *,
        model: str | None = None,
        template: str = DEFAULT_TEMPLATE,
        catalog: Catalog | None = None,
    ) -> None:
        self._store = store
        self._tree = tree
        self._model = model
        self._template = template
        self._own_catalog = catalog
        self.threads = AgentThreads(store, tree)
        """Detached agents' user threads (also reached through the ``*thread*`` methods here)."""
        self._lock = anyio.Lock()
        self._agents: dict[str, str] = {}
        self._replied: set[str] = set()
        self._group: TaskGroup | None = None

    async def __aenter__(self) -> ChatService:
        self._group = await anyio.create_task_group().__aenter__()
        await self._group.start(self.threads.follow)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._group is not None
        self._group.cancel_scope.cancel()
        return await self._group.__aexit__(kind, error, tb)

    # ---- reading ---------------------------------------------------------------------------------

    async def _row(self, chat_id: str) -> Row:
        row = await self._store.chat_row(chat_id)
        if row is None:
            raise NotFoundError(f"no chat has the id {chat_id!r}")
        return row

    def _live(self, row: Row) -> Agent | None:
        """The chat's dispatch agent while it runs (in this hub run, not finished or interrupted)."""
        agent = self._tree.agents.get(row["agent_id"] or "")
        if agent is None or agent.state.terminal or agent.state is AgentState.interrupted:
            return None
        return agent

    def _view(self, row: Row) -> ChatView:
        live = self._live(row)
        fields = {k: row[k] for k in ("id", "title", "created_at", "updated_at", "forked_from", "root", "model", *CAPS)}
        return ChatView(**fields, agent_id=live.id if live else None)

    async def create_chat(
        self, title: str | None = None, root: Path | None = None, caps: Caps = NO_CAPS, model: str | None = None
    ) -> ChatView:
        """A new, empty chat whose agents work in ``root`` (an open project of the tree; None: the
        hub's own), each of its dispatch agents with ``caps`` (checked) over its template's and on
        ``model`` (a tag or litellm name; None: the hub's default); without a title, its first
        message gives it one."""
        now = times.now()
        row: Row = {"id": new_id("c"), "title": (title or "").strip(), "created_at": now, "updated_at": now}
        row["root"] = None if root is None else str(root)
        row["model"] = model.strip() if model and model.strip() else None
        row |= caps.check().spec_fields()
        await self._store.add_chat(row)
        return self._view(await self._row(row["id"]))

    async def chats(
        self, query: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[ChatView]:
        """Chats, newest first; ``query``: words in the title or the messages; ``since`` / ``until``:
        ISO dates or times bounding the last update (``since`` included, ``until`` not)."""
        words = query.strip() if query and query.strip() else None
        rows = await self._store.find_chats(words, _moment(since, "since"), _moment(until, "until"))
        return [self._view(row) for row in rows]

    async def _history(self, head_id: str | None) -> list[ChatMessageView]:
        rows = await self._store.chat_history(head_id) if head_id else []
        return [ChatMessageView.model_validate({k: r[k] for k in ChatMessageView.model_fields}) for r in rows]

    async def chat(self, chat_id: str) -> ChatDetail:
        """A chat and its messages, oldest first (a fork: the shared history, then its own)."""
        row = await self._row(chat_id)
        return ChatDetail(**self._view(row).model_dump(), messages=await self._history(row["head_id"]))

    def chat_of(self, agent_id: str) -> str | None:
        """The chat whose dispatch agent is ``agent_id`` or one of its ancestors (this hub run)."""
        agent = self._tree.agents.get(agent_id)
        while agent is not None and agent.spec.parent_id is not None:
            agent = self._tree.agents.get(agent.spec.parent_id)
        return self._agents.get(agent.id if agent is not None else agent_id)

    # ---- writing ---------------------------------------------------------------------------------

    async def _append(self, row: Row, role: str, text: str, agent_id: str | None = None) -> ChatMessageView:
        now = times.now()
        message: Row = {
            "id": new_id("cm"),
            "chat_id": row["id"],
            "parent_id": row["head_id"],
            "role": role,
            "text": text,
            "agent_id": agent_id,
            "created_at": now,
        }
        update: Row = {"head_id": message["id"], "updated_at": now}
        if role == "user" and not row["title"]:
            update["title"] = _title(text)
        await self._store.add_chat_message(message, update)
        return ChatMessageView.model_validate(message)

    async def post_chat_message(self, chat_id: str, text: str) -> ChatMessageView:
        """Send ``text`` to the chat's dispatch agent: into its inbox while it runs, else to a new
        one that continues from the chat's history. Returns the user's message once stored."""
        if not text.strip():
            raise UserError("a chat message needs some text")
        async with self._lock:
            row = await self._row(chat_id)
            live = self._live(row)
            if live is not None and not live.reads_messages:  # giving its report: let it finish first
                await live.finished.wait()
                live = None
            spec = None
            if live is None:
                await self._settle(row)
                spec = await self._spec(row, text)  # an unknown template or no model: refused before anything is kept
                row = await self._row(chat_id)
            message = await self._append(row, "user", text)
            if live is not None and live.reads_messages:
                self._tree.put_message(live.id, MessageKind.instruction, text, sender="user")
            else:
                if live is not None:  # it began its report meanwhile: this message goes to the next one
                    await live.finished.wait()
                await self._start(chat_id, message, spec or await self._spec(row, text))
        return message

    async def _spec(self, row: Row, text: str) -> AgentSpec:
        """The spec of the chat's next dispatch agent, from its project's catalog as the config
        files say now (the tree's projects follow edits)."""
        catalog = self._own_catalog
        if catalog is None:
            root = row["root"]
            catalog = (await self._tree.open_project(Path(root))).catalog if root else self._tree.catalog
        caps = Caps(row["budget_usd"], row["max_tokens"], row["max_steps"])
        return catalog.top_spec(text, model=row["model"] or self._model, template=self._template, caps=caps)

    async def _start(self, chat_id: str, message: ChatMessageView, spec: AgentSpec) -> None:
        """Start the chat's dispatch agent on ``message``, its transcript seeded with the history."""
        turns = [{"role": m.role, "content": m.text} for m in await self._history(message.parent_id)]
        self._agents[spec.id] = chat_id
        agent = self._tree.start(spec, chat_id=chat_id)
        if turns:  # before the agent's task first runs: it begins from this transcript, not its own
            system = {"role": "system", "content": agent.system_prompt()}
            user = {"role": "user", "content": message.text}
            agent.transcript[:] = [system, *(t for t in turns if t["role"] != "system"), user]
        await self._store.update_chat(chat_id, {"agent_id": agent.id})
        self.watch(chat_id, agent)

    def watch(self, chat_id: str, agent: Agent) -> None:
        """Turn ``agent``'s report into the chat's next assistant message when it finishes (the
        runtime calls this for a chat's dispatch agent it resumes)."""
        if self._group is None:
            raise RuntimeError("the chat service is not running; use 'async with ChatService(...)'")
        self._agents[agent.id] = chat_id
        self._group.start_soon(self._await_report, chat_id, agent)

    async def _await_report(self, chat_id: str, agent: Agent) -> None:
        await agent.finished.wait()
        async with self._lock:
            await self._settle(await self._row(chat_id), agent)

    async def _settle(self, row: Row, agent: Agent | None = None) -> None:
        """Record the report of the chat's finished dispatch agent, once (the lock is held)."""
        agent = agent or self._tree.agents.get(row["agent_id"] or "")
        if agent is None or agent.id in self._replied or not agent.state.terminal:
            return  # none, recorded already, or interrupted (a resumed agent is watched anew)
        self._replied.add(agent.id)
        if agent.state is AgentState.done:
            text = agent.report or "(the dispatch agent reported nothing)"
        else:
            text = f"(the dispatch agent {agent.state.value}: {agent.error or agent.reason or 'no reason given'})"
        await self._append(row, "assistant", text, agent.id)

    async def fork_chat(self, chat_id: str, message_id: str) -> ChatView:
        """A new chat sharing this one's history up to ``message_id``; the original is unchanged
        and no agent is copied. NotFoundError when the message is not in the chat's history."""
        row = await self._row(chat_id)
        shared = [m.id for m in await self._history(row["head_id"])]
        if message_id not in shared:
            raise NotFoundError(f"message {message_id!r} is not in the history of chat {chat_id}")
        now = times.now()
        fork: Row = {
            "id": new_id("c"),
            "title": f"{row['title']} (fork)" if row["title"] else "",
            "created_at": now,
            "updated_at": now,
            "forked_from": f"{chat_id}:{message_id}",
            "head_id": message_id,
            "root": row["root"],
            "model": row["model"],
            **{k: row[k] for k in CAPS},
        }
        await self._store.add_chat(fork)
        return self._view(await self._row(fork["id"]))

    # ---- detached agents' threads ----------------------------------------------------------------

    async def threads_list(self) -> list[ThreadView]:
        """Every detached agent's thread, newest first."""
        return await self.threads.threads()

    async def thread(self, agent_id: str) -> ThreadDetail:
        """A detached agent's thread: its questions and the user's answers, oldest first."""
        return await self.threads.thread(agent_id)

    async def answer_thread(self, agent_id: str, text: str) -> ThreadMessageView:
        """Answer a detached agent in its thread (its ``ask_user`` returns the answer)."""
        return await self.threads.answer(agent_id, text)
