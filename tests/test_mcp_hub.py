"""The hub's MCP tools through a real MCP client session, over a real Hub and the scripted model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import TextContent

from dispatch.hub.mcp import tools as mcp_hub
from dispatch.hub.service.hub import Hub
from tests.agent_helpers import call
from tests.fakes.scripted_llm import Reply, ScriptedLLM

pytestmark = pytest.mark.anyio
MODEL = "openai/scripted"


async def tool(client: Client, name: str, **arguments: Any) -> tuple[bool, Any]:
    result = await client.call_tool(name, arguments)
    text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
    return result.is_error, (text if result.is_error else json.loads(text))


async def test_start_wait_result_and_tree(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script(
        "[mcp-top]",
        [
            Reply(tool_calls=[call("summon", task="[mcp-child] note it", scope=["n.md"], wait=True)]),
            Reply(text="R" * 50),
        ],
    )
    scripted_llm.script(
        "[mcp-child]", [Reply(tool_calls=[call("write_file", path="n.md", content="x")]), Reply(text="noted")]
    )
    (tmp_path / "root").mkdir()
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with (
        Hub.open(tmp_path / "root", tmp_path / "data", default_model=MODEL) as hub,
        Client(mcp_hub.build_server(hub)) as client,
    ):
        failed, started = await tool(client, "start", task="[mcp-top] delegate a note")
        assert not failed, started
        agent_id = started["agent_id"]
        result = await client.call_tool("wait", {"agent_id": agent_id, "timeout_s": 30}, progress_callback=on_progress)
        waited = json.loads("".join(c.text for c in result.content if isinstance(c, TextContent)))
        assert waited["state"] == "done" and waited["report"] == "R" * 50
        assert progress, "wait sent no progress notifications"
        failed, cut = await tool(client, "result", agent_id=agent_id, max_chars=10)
        assert cut["report"] == "R" * 10 and cut["truncated"] is True and cut["full_chars"] == 50
        failed, tree = await tool(client, "agents")
        assert {a["state"] for a in tree} == {"done"} and len(tree) == 2
        child = next(a for a in tree if a["parent_id"] == agent_id)
        failed, status = await tool(client, "status", agent_id=child["id"])
        assert status["state"] == "done" and status["steps"] == 2


async def test_wait_times_out_then_send_reaches_a_running_child(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script(
        "[mcp-parent]",
        [
            Reply(tool_calls=[call("summon", task="[mcp-slow] take a while", wait=True)]),
            lambda request: Reply(text="child said: " + request.messages[-1]["content"]),
        ],
    )
    scripted_llm.script(
        "[mcp-slow]",
        [
            Reply(tool_calls=[call("list_dir", path=".")], delay_s=1.5),
            lambda request: Reply(text="saw: " + request.messages[-1]["content"]),
        ],
    )
    (tmp_path / "root").mkdir()
    async with (
        Hub.open(tmp_path / "root", tmp_path / "data", default_model=MODEL) as hub,
        Client(mcp_hub.build_server(hub)) as client,
    ):
        _, started = await tool(client, "start", task="[mcp-parent] delegate something slow")
        parent_id = started["agent_id"]
        _, early = await tool(client, "wait", agent_id=parent_id, timeout_s=0.5)
        assert early["timed_out"] is True and early["state"] != "done"
        _, tree = await tool(client, "agents")
        child_id = next(a["id"] for a in tree if a["parent_id"] == parent_id)
        failed, sent = await tool(
            client, "send", agent_id=child_id, text="Mind the tests.", kind="correction", wait_for_delivery_s=20
        )
        assert not failed and sent["delivered"] is True and sent["step"] == 1
        _, final = await tool(client, "wait", agent_id=parent_id, timeout_s=30)
        assert final["state"] == "done"
        assert "[correction from the user" in final["report"] and "Mind the tests." in final["report"]


async def test_ids_and_kinds_are_checked_before_any_lookup(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    async with (
        Hub.open(tmp_path / "root", tmp_path / "data", default_model=MODEL) as hub,
        Client(mcp_hub.build_server(hub)) as client,
    ):
        failed, text = await tool(client, "status", agent_id="../etc")
        assert failed and "not of the form" in text
        failed, text = await tool(client, "status", agent_id="a-00000000")
        assert failed and "a-00000000" in text
        failed, text = await tool(client, "send", agent_id="a-00000000", text="hi", kind="shout")
        assert failed and "kind 'shout'" in text
        failed, text = await tool(client, "approve", approval_id="x y", decision="approve")
        assert failed and "not a valid id" in text
        _, listed = await tool(client, "approvals")
        assert listed == []
