"""The hub's MCP face as Claude Desktop meets it: `dispatch mcp` over stdio (a hub of its own, or
attached to a running one) and `/mcp` over streamable HTTP on `dispatch serve`, token-guarded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import TextContent

from dispatch.hub.mcp.proxy import hub_client
from tests.agent_helpers import call
from tests.api_helpers import MODEL, ServedHub
from tests.fakes.scripted_llm import Reply, ScriptedLLM

pytestmark = pytest.mark.anyio


def stdio_mcp(project: Path) -> Client:
    args = ["-m", "dispatch.hub.cli", "mcp", "--root", str(project), "--model", MODEL]
    return Client(StdioServerParameters(command=sys.executable, args=args, env=dict(os.environ)))


async def tool(client: Client, name: str, **arguments: Any) -> Any:
    result = await client.call_tool(name, arguments)
    text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
    assert not result.is_error, text
    return json.loads(text)


def script_task(llm: ScriptedLLM, tag: str) -> None:
    llm.script(
        f"[{tag}]",
        [Reply(tool_calls=[call("write_file", path=f"{tag}.txt", content=tag)]), Reply(text=f"{tag} finished")],
    )


async def run_a_task(client: Client, tag: str, **start: Any) -> str:
    started = await tool(client, "start", task=f"[{tag}] write a file", **start)
    waited = await tool(client, "wait", agent_id=started["agent_id"], timeout_s=60)
    assert waited["state"] == "done", waited
    assert (await tool(client, "result", agent_id=started["agent_id"]))["report"] == f"{tag} finished"
    tree = await tool(client, "agents")
    assert started["agent_id"] in {a["id"] for a in tree}
    return str(started["agent_id"])


async def test_dispatch_mcp_over_stdio_runs_a_hub_of_its_own(scripted_llm: ScriptedLLM, project: Path) -> None:
    script_task(scripted_llm, "stdio-own")
    async with stdio_mcp(project) as client:
        await run_a_task(client, "stdio-own")
    assert (project / "stdio-own.txt").read_text() == "stdio-own"


async def test_mcp_over_streamable_http_needs_the_token(scripted_llm: ScriptedLLM, served: ServedHub) -> None:
    script_task(scripted_llm, "http")
    async with hub_client(served.base_url + "/mcp", served.token) as client:
        await run_a_task(client, "http", model=MODEL)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    async with httpx.AsyncClient(timeout=10) as plain:
        refused = await plain.post(served.base_url + "/mcp", json=body)
        foreign = await plain.post(
            served.base_url + "/mcp", json=body, headers=served.auth | {"Origin": "http://evil.example"}
        )
    assert refused.status_code == 401
    assert foreign.status_code == 403


async def test_dispatch_mcp_attaches_to_a_running_hub(
    scripted_llm: ScriptedLLM, served: ServedHub, project: Path
) -> None:
    script_task(scripted_llm, "attached")
    async with stdio_mcp(project) as client:
        agent_id = await run_a_task(client, "attached", model=MODEL)
    async with served.client() as rest:
        seen = (await rest.get(f"/api/agents/{agent_id}")).json()
    assert seen["state"] == "done" and seen["report"] == "attached finished"


def test_dispatch_mcp_for_another_project_is_refused_instead_of_working_in_the_running_hubs(
    served: ServedHub, project: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "dispatch.hub.cli", "mcp", "--root", str(other)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    assert f"serves the project {project.resolve()}, not {other.resolve()}" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(other.iterdir()) == [], "nothing was started in either project"
