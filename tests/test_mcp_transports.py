"""The hub's MCP face as Claude Desktop meets it: `dispatch mcp` over stdio (attached to a running
hub, or to one it starts in the background, which outlives the client until `dispatch stop`) and
`/mcp` over streamable HTTP on `dispatch serve`, token-guarded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import TextContent

from dispatch.hub.mcp.proxy import hub_client
from dispatch.hub.service.lifecycle import running_hub
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


def dispatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatch.hub.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


async def test_dispatch_mcp_starts_a_hub_in_the_background_that_outlives_the_client(
    scripted_llm: ScriptedLLM, project: Path
) -> None:
    script_task(scripted_llm, "stdio-own")
    scripted_llm.script("[slow]", [Reply(text="finished after the client left", delay_s=2)])
    data_dir, where = Path(os.environ["DISPATCH_HOME"]), str(await anyio.Path(project).resolve())
    try:
        async with stdio_mcp(project) as client:
            await run_a_task(client, "stdio-own")
            slow = await tool(client, "start", task="[slow] take your time")
        assert (project / "stdio-own.txt").read_text() == "stdio-own"

        hub = running_hub(data_dir)
        assert hub is not None and hub.address is not None and hub.root == where
        token = (data_dir / "token").read_text().strip()
        async with httpx.AsyncClient(base_url=hub.address, headers={"Authorization": f"Bearer {token}"}) as rest:
            with anyio.fail_after(60):
                while (seen := (await rest.get(f"/api/agents/{slow['agent_id']}")).json())["state"] != "done":
                    await anyio.sleep(0.1)
        assert seen["report"] == "finished after the client left"
    finally:
        stopped = dispatch("stop")

    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"stopped the hub of {where} (pid {hub.pid})"
    assert running_hub(data_dir) is None
    again = dispatch("stop")
    assert again.returncode == 0 and again.stdout.strip() == f"no hub runs on {data_dir}"


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


async def test_dispatch_mcp_for_another_project_starts_its_tasks_there_through_the_running_hub(
    scripted_llm: ScriptedLLM, served: ServedHub, project: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    script_task(scripted_llm, "elsewhere")
    async with stdio_mcp(other) as client:
        agent_id = await run_a_task(client, "elsewhere")

    assert (other / "elsewhere.txt").read_text() == "elsewhere"
    assert not (project / "elsewhere.txt").exists()
    async with served.client() as rest:
        seen = (await rest.get(f"/api/agents/{agent_id}")).json()
    assert seen["root"] == str(await anyio.Path(other).resolve())
