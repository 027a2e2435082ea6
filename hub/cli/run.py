"""``dispatch run``: one top agent on one task, shown live in the terminal, to completion."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.live import Live

from dispatch.hub.agents.catalog import DEFAULT_TEMPLATE, Catalog
from dispatch.hub.agents.loop import Agent
from dispatch.hub.agents.spec import AgentSpec, AgentState
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.cli.live_view import LiveView, print_line
from dispatch.hub.errors import UserError
from dispatch.hub.events import EventBus
from dispatch.hub.heap import settle_heap
from dispatch.hub.llm.router import Router
from dispatch.hub.llm.types import Usage
from dispatch.hub.mounts.pins import ToolPins
from dispatch.hub.store.db import Store
from dispatch.servers.lsp.manager import LspManager

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130


def summary(tree: AgentTree, top: Agent) -> dict[str, Any]:
    """The run as one JSON-ready object: the report, every agent, and the token usage."""
    total = Usage()
    agents: list[dict[str, Any]] = []
    for agent in tree.agents.values():
        total.add(agent.usage)
        agents.append(
            {
                "id": agent.id,
                "parent_id": agent.spec.parent_id,
                "name": agent.spec.name,
                "state": agent.state.value,
                "model": agent.model,
                "scope": list(agent.spec.scope),
                "report": agent.report,
                "error": agent.error,
                "usage": agent.usage.model_dump(),
            }
        )
    return {
        "id": top.id,
        "state": top.state.value,
        "report": top.report,
        "error": top.error,
        "agents": agents,
        "usage": total.model_dump(),
    }


async def _run(spec: AgentSpec, catalog: Catalog, root: Path, json_output: bool) -> tuple[AgentTree, Agent]:
    console = Console(stderr=True)
    events = EventBus()
    async with (
        LspManager(catalog.config.lsp) as lsp,
        Store.open() as store,
        AgentTree(root, Router(catalog.config.models, store), events, catalog, lsp=lsp) as tree,
        events.subscribe() as stream,
    ):
        tree.outside.pins = ToolPins(store)  # no approvals here: a changed tool list is left out, saying why
        settle_heap()
        top = tree.start(spec)
        view = LiveView(tree)
        if json_output:
            await top.finished.wait()
        elif console.is_terminal:
            with Live(view.render(), console=console, refresh_per_second=8) as live:
                async with anyio.create_task_group() as group:

                    async def follow() -> None:
                        async for event in stream:
                            view.feed(event)
                            live.update(view.render())

                    group.start_soon(follow)
                    await top.finished.wait()
                    group.cancel_scope.cancel()
                live.update(view.render())
        else:
            async with anyio.create_task_group() as group:

                async def log_lines() -> None:
                    async for event in stream:
                        print_line(console, event)

                group.start_soon(log_lines)
                await top.finished.wait()
                group.cancel_scope.cancel()
        return tree, top


def run_task(
    task: str,
    *,
    model: str | None,
    root: Path,
    json_output: bool,
    isolated: bool,
    template: str = DEFAULT_TEMPLATE,
    skills: Sequence[str] = (),
) -> int:
    """Run the task; print the report (or the JSON summary); return the exit code.

    The config, templates and skills are loaded and checked first: a mistake in them prints its
    error and returns ``EXIT_USAGE`` before any agent starts.
    """
    try:
        catalog = Catalog.load(root)
        spec = catalog.top_spec(task, model=model, template=template, skills=skills, isolated=isolated)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    tree, top = anyio.run(_run, spec, catalog, root, json_output)
    if json_output:
        print(json.dumps(summary(tree, top), indent=2))
    elif top.state is AgentState.done:
        print(top.report or "")
    else:
        print(f"error: {top.error or top.reason or top.state.value}", file=sys.stderr)
    if top.state is AgentState.done:
        return EXIT_OK
    return EXIT_CANCELLED if top.state is AgentState.cancelled else EXIT_FAILED
