"""``dispatch doctor``'s look at the outside MCP servers of the config (``mcp_servers``).

Its room: starting each configured server once, listing its tools and comparing them with the list
pinned in the data directory's store (:mod:`dispatch.hub.mounts.pins`), without pinning or changing
anything. Each server is a finding (its transport and command or URL, and its state: ``pinned``,
``changed``, ``unpinned`` or ``failed``), followed by one finding per tool with its description,
so the user reads what agents will be told.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import anyio

from dispatch.hub.cli.doctor import Finding
from dispatch.hub.config.outside import McpServerConfig
from dispatch.hub.mounts.outside import START_TIMEOUT_S, list_tools, open_client
from dispatch.hub.mounts.pins import tool_entries, tools_hash
from dispatch.hub.store.db import Store

__all__ = ["check_tool_servers"]


async def _pins(db: Path) -> dict[str, str]:
    """Server name -> pinned hash, from the store (none when the data directory has no database)."""
    if not await anyio.Path(db).is_file():
        return {}
    async with Store.open(db) as store:
        return await store.call(lambda d: {str(r["server"]): str(r["hash"]) for r in d.table("tool_pins").rows})


async def _inspect(name: str, config: McpServerConfig, pins: Mapping[str, str]) -> list[Finding]:
    where = f"{config.transport}: {config.address()}"
    try:
        with anyio.fail_after(START_TIMEOUT_S):
            async with open_client(config) as client:
                tools = await list_tools(client)
    except Exception as error:  # reported, not raised: the doctor reports every server
        return [Finding(name, f"{where}; failed to start: {error or type(error).__name__}", "failed")]
    digest = tools_hash(tool_entries(tools))
    pinned = pins.get(name)
    if pinned is None:
        head = Finding(name, f"{where}; unpinned: {len(tools)} tools, pinned when an agent first mounts it")
    elif pinned == digest:
        head = Finding(name, f"{where}; pinned: {len(tools)} tools, as approved")
    else:
        head = Finding(name, f"{where}; changed since approved: agents get none of its tools until you approve "
                       "the change (the hub asks when an agent next mounts it)", "changed")  # fmt: skip
    lines = [Finding(f"  {t.name}", (t.description or "(no description)").strip().splitlines()[0]) for t in tools]
    return [head, *lines]


def check_tool_servers(servers: Mapping[str, McpServerConfig], db: Path) -> list[Finding]:
    """A finding per configured server (started now, stopped again) and one per tool it offers."""

    async def run() -> list[Finding]:
        pins = await _pins(db)
        results: dict[str, list[Finding]] = {}

        async def one(name: str, config: McpServerConfig) -> None:
            results[name] = await _inspect(name, config, pins)

        async with anyio.create_task_group() as group:
            for name, config in servers.items():
                group.start_soon(one, name, config)
        return [finding for name in servers for finding in results[name]]

    return anyio.run(run)
