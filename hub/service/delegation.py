"""The ``HubService`` methods :class:`~dispatch.hub.service.hub.Hub` hands on: chats and detached
agents' threads to its :class:`~dispatch.hub.service.chats.ChatService` (``hub.chat_service``), approvals
to its :class:`~dispatch.hub.service.approvals.Approvals` (``hub.approval_service``), which own that logic;
artifacts and usage to the store's records. New work (a chat message, an agent started, resumed or
messaged) is refused while the hub stops, and while its data directory is full (``StoreFull``)."""

from __future__ import annotations

from dispatch.hub.errors import NotFoundError, UserError
from dispatch.hub.service.agent_views import usage_view
from dispatch.hub.service.approvals import Approvals
from dispatch.hub.service.chats import ChatService
from dispatch.hub.service.threads import ThreadDetail, ThreadMessageView, ThreadView
from dispatch.hub.store.db import Store
from dispatch.hub.store.records import Records
from dispatch.hub.views import (
    ApprovalView,
    ArtifactView,
    ChatDetail,
    ChatMessageView,
    ChatView,
    Decision,
    Remember,
    UsageView,
)


class Delegation:
    """Delegation to the chat service, the approvals and the records; :meth:`attach` the first two."""

    chat_service: ChatService
    approval_service: Approvals
    stopping: bool
    default_model: str | None
    interrupted_on_open: list[str]
    store: Store
    _records: Records

    def _refuse_new_work(self) -> None:
        if self.stopping:
            raise UserError("the hub is stopping; it takes no new work")
        if self.store.full is not None:
            raise self.store.full

    def attach(
        self, chats: ChatService, approvals: Approvals, *, default_model: str | None, interrupted: list[str]
    ) -> None:
        self.chat_service = chats
        self.approval_service = approvals
        self.default_model = default_model
        """The model of top agents whose template names none (``Hub.open(default_model=...)``)."""
        self.interrupted_on_open = interrupted
        """Agents a dead hub had left unfinished, marked ``interrupted`` when this one opened."""

    # ---- chats -----------------------------------------------------------------------------------

    async def chats(
        self, query: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[ChatView]:
        return await self.chat_service.chats(query, since, until)

    async def chat(self, chat_id: str) -> ChatDetail:
        return await self.chat_service.chat(chat_id)

    async def post_chat_message(self, chat_id: str, text: str) -> ChatMessageView:
        self._refuse_new_work()
        return await self.chat_service.post_chat_message(chat_id, text)

    async def fork_chat(self, chat_id: str, message_id: str) -> ChatView:
        return await self.chat_service.fork_chat(chat_id, message_id)

    # ---- detached agents' threads ----------------------------------------------------------------

    async def threads(self) -> list[ThreadView]:
        return await self.chat_service.threads_list()

    async def thread(self, agent_id: str) -> ThreadDetail:
        return await self.chat_service.thread(agent_id)

    async def answer_thread(self, agent_id: str, text: str) -> ThreadMessageView:
        return await self.chat_service.answer_thread(agent_id, text)

    # ---- approvals -------------------------------------------------------------------------------

    async def approvals(self, state: str | None = "pending") -> list[ApprovalView]:
        return await self.approval_service.approvals(state)

    async def answer_approval(self, approval_id: str, decision: Decision, remember: Remember) -> ApprovalView:
        return await self.approval_service.answer_approval(approval_id, decision, remember)

    # ---- artifacts and usage ---------------------------------------------------------------------

    async def artifacts(self, query: str | None = None, kind: str | None = None) -> list[ArtifactView]:
        found = await self._records.find(query, kind.strip().lower() if kind else None, limit=200)
        return [ArtifactView(**a.model_dump(include={"id", "kind", "title", "agent_id", "created_at"})) for a in found]

    async def artifact(self, artifact_id: str) -> ArtifactView:
        found = await self._records.get(artifact_id)
        if found is None:
            raise NotFoundError(f"no artifact has the id {artifact_id!r}")
        return ArtifactView(**found.model_dump(include={"id", "kind", "title", "agent_id", "created_at", "content"}))

    async def usage(self) -> UsageView:
        store = self.store
        groups = [await store.usage_by(g) for g in ("agent", "key", "model", "day")]
        return usage_view(await store.usage_total(), *groups)
