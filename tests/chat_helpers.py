"""Helpers for tests of chats, approvals and detached threads: a store on disk, a tree with the
approvals installed, and a running chat service, as the runtime composes them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.agents.loop import Agent, AgentHooks
from dispatch.hub.agents.spec import AgentSpec, AgentState
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.events import Event, EventBus
from dispatch.hub.ids import new_id
from dispatch.hub.llm.client import LiteLLMClient
from dispatch.hub.policy.grants import Grants
from dispatch.hub.service.approvals import Approvals
from dispatch.hub.service.chats import ChatService
from dispatch.hub.service.hub import gated_tree
from dispatch.hub.store.db import Store
from dispatch.hub.views import ApprovalView
from tests.agent_helpers import MODEL


@dataclass
class Parts:
    store: Store
    tree: AgentTree
    approvals: Approvals
    chats: ChatService
    events: list[Event]


@asynccontextmanager
async def running_hub(root: Path, db: Path, catalog: Catalog | None = None) -> AsyncIterator[Parts]:
    """Store (SQLite on disk at ``db``), tree on ``root``, approvals and chats, all running."""
    await anyio.Path(root).mkdir(parents=True, exist_ok=True)
    seen: list[Event] = []

    async def collect(stream: MemoryObjectReceiveStream[Event]) -> None:
        async for event in stream:
            seen.append(event)

    async with Store.open(db) as store:
        tree, approvals = gated_tree(root, LiteLLMClient(), EventBus(), catalog or Catalog.builtin(), store)
        async with (
            tree,
            ChatService(store, tree, model=MODEL) as chats,
            tree.events.subscribe() as stream,
            anyio.create_task_group() as group,
        ):
            group.start_soon(collect, stream)
            yield Parts(store, tree, approvals, chats, seen)
            group.cancel_scope.cancel()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Poll an async condition until it holds; fail when it does not within the timeout."""
    with anyio.fail_after(timeout_s):
        while not await check():
            await anyio.sleep(0.01)


async def pending(parts: Parts, count: int = 1) -> list[ApprovalView]:
    """Wait until ``count`` approvals are pending and return them."""
    found: list[ApprovalView] = []

    async def enough() -> bool:
        found[:] = await parts.approvals.approvals("pending")
        return len(found) >= count

    await eventually(enough)
    return found


def idle_agent(tree: AgentTree, name: str, parent: Agent | None = None) -> Agent:
    """An agent registered in the tree but not run (for driving its links directly), ``running``."""
    spec = AgentSpec(
        id=new_id(), parent_id=parent.id if parent else None, name=name, task=name, model=MODEL, grants=Grants()
    )
    hooks = AgentHooks(
        live_children=lambda: 0,
        on_state=lambda agent: None,
        on_tool_call=lambda agent, call: None,
        on_tool_result=lambda agent, run: None,
    )
    agent = Agent(spec=spec, hooks=hooks)
    tree.agents[spec.id] = agent
    agent.set_state(AgentState.running)
    return agent
