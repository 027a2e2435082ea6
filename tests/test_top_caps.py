"""Caps for the top agent, as a user sets them: ``budget_usd`` and ``max_tokens`` through the REST
API, a chat, the MCP ``start`` tool and ``dispatch run``; ``max_steps`` from a template, ``summon``
and ``dispatch run --max-steps``. Each stops its agent with a reason that says which cap did it;
bad values are refused in one line naming the field.

Dollars need prices: those tests serve the hub a models config whose key points at the scripted
model server, priced per token (``tests.models_helpers``), so spending goes through the real key
router and litellm. Tokens and steps need none: those tests use the shipped scripted model in
process, with ``usage`` on its steps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from mcp import Client
from mcp_types import TextContent

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.agents.spec import AgentState, Caps
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.api.app import create_app
from dispatch.hub.errors import ConfigError
from dispatch.hub.llm.scripted import Reply, Script, ScriptedModel
from dispatch.hub.mcp import tools as mcp_hub
from dispatch.hub.service.hub import Hub
from tests.agent_helpers import assert_done, call, tool_messages, top_spec
from tests.fakes.scripted_llm import ScriptedLLM
from tests.models_helpers import PRICE

DISPATCH = [sys.executable, "-m", "dispatch.hub.cli"]
TOKEN = "t0ken"
LOOKING = Reply(tool_calls=[call("list_dir", path=".")], usage=(30, 0))
"""One step of a looping agent: a tool call, 30 tokens ($0.03 at the test price)."""


def priced_project(root: Path, server: ScriptedLLM) -> Path:
    """A project whose config prices the scripted server's model (10 tokens cost $0.01)."""
    model = {"tags": ["medium"], "input_usd_per_mtok": PRICE, "output_usd_per_mtok": PRICE}
    key = {"name": "main", "provider": "openai", "key": "sk-main", "base_url": server.base_url, "models": {"m": model}}
    (root / ".dispatch").mkdir(parents=True)
    config = {"models": {"keys": [key], "default": "medium", "backoff_s": 0.01}}
    (root / ".dispatch" / "config.yaml").write_text(yaml.safe_dump(config))
    return root


def project_template(root: Path, name: str, body: str) -> None:
    folder = root / ".dispatch" / "templates"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(body)


@asynccontextmanager
async def api(hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    """The hub's REST API in process, with its token."""
    transport = httpx.ASGITransport(app=create_app(hub, token=TOKEN))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", headers=headers) as client:
        yield client


async def finished(client: httpx.AsyncClient, agent_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """The agent once it has finished, through the API."""
    with anyio.fail_after(timeout_s):
        while True:
            agent: dict[str, Any] = (await client.get(f"/api/agents/{agent_id}")).json()
            if agent["state"] in ("done", "failed", "cancelled"):
                return agent
            await anyio.sleep(0.05)


async def tool(client: Client, name: str, **arguments: Any) -> tuple[bool, Any]:
    result = await client.call_tool(name, arguments)
    text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
    return result.is_error, (text if result.is_error else json.loads(text))


def dispatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DISPATCH, *args], capture_output=True, text=True, timeout=120, check=False)


# -- budget_usd and max_tokens of a top agent --------------------------------------------------------


@pytest.mark.anyio
async def test_a_top_agent_started_with_budget_usd_stops_at_its_budget(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    root = priced_project(tmp_path / "project", scripted_llm)
    scripted_llm.script("[spend]", [LOOKING, LOOKING])  # $0.06 after two steps: no third call

    async with Hub.open(root, tmp_path / "data") as hub, api(hub) as client:
        started = await client.post("/api/agents", json={"task": "[spend] look around forever", "budget_usd": 0.05})
        assert started.status_code == 201, started.text
        agent = await finished(client, started.json()["id"])

    assert (agent["state"], agent["reason"]) == ("failed", "budget")
    assert agent["error"] == "budget: spent $0.06 of its $0.05 budget"
    assert (agent["budget_usd"], agent["max_tokens"]) == (0.05, None)
    assert agent["cost_usd"] == pytest.approx(0.06)
    assert len(scripted_llm.requests_for("[spend]")) == 2


@pytest.mark.anyio
async def test_a_chat_with_a_budget_gives_it_to_its_dispatch_agent(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    root = priced_project(tmp_path / "project", scripted_llm)
    scripted_llm.script("[chat-spend]", [LOOKING, LOOKING])

    async with Hub.open(root, tmp_path / "data") as hub, api(hub) as client:
        chat = (await client.post("/api/chats", json={"title": "capped", "budget_usd": 0.05})).json()
        assert chat["budget_usd"] == 0.05
        await client.post(f"/api/chats/{chat['id']}/messages", json={"text": "[chat-spend] look around forever"})
        with anyio.fail_after(60):
            while len(messages := (await client.get(f"/api/chats/{chat['id']}")).json()["messages"]) < 2:
                await anyio.sleep(0.05)
        agent = await finished(client, messages[1]["agent_id"])
        fork = (await client.post(f"/api/chats/{chat['id']}/fork", json={"message_id": messages[0]["id"]})).json()

    assert (agent["state"], agent["reason"], agent["budget_usd"]) == ("failed", "budget", 0.05)
    assert (fork["budget_usd"], fork["max_tokens"], fork["max_steps"]) == (0.05, None, None)
    assert messages[1]["text"] == "(the dispatch agent failed: budget: spent $0.06 of its $0.05 budget)"


@pytest.mark.anyio
async def test_the_mcp_start_tool_caps_tokens_and_steps(tmp_path: Path) -> None:
    model = ScriptedModel(
        [
            Script(match="[tokens]", steps=[Reply(tool_calls=[call("list_dir", path=".")], usage=(60, 0))] * 2),
            Script(match="[steps]", steps=[LOOKING] * 2),
        ]
    )
    (tmp_path / "root").mkdir()
    with model:
        async with (
            Hub.open(tmp_path / "root", tmp_path / "data", model=model, default_model="scripted") as hub,
            Client(mcp_hub.build_server(hub)) as client,
        ):
            failed, tokens = await tool(client, "start", task="[tokens] look around", max_tokens=100)
            assert not failed, tokens
            failed, steps = await tool(client, "start", task="[steps] look around", max_steps=2)
            assert not failed, steps
            failed, by_tokens = await tool(client, "wait", agent_id=tokens["agent_id"], timeout_s=30)
            failed, by_steps = await tool(client, "wait", agent_id=steps["agent_id"], timeout_s=30)
            failed, status = await tool(client, "status", agent_id=steps["agent_id"])

    assert (by_tokens["state"], by_tokens["error"]) == ("failed", "budget: used 120 of its 100 tokens")
    assert by_steps["state"] == "failed"
    assert by_steps["error"].startswith(
        "stopped after 2 steps without a report (its own max_steps is 2; the hub's limits.max_steps is 500)"
    )
    assert status["reason"] == by_steps["error"]
    assert status["caps"] == {"budget_usd": None, "max_tokens": None, "max_steps": 2}


# -- max_steps: a template's, summon's, dispatch run's -------------------------------------------------


@pytest.mark.anyio
async def test_a_templates_max_steps_stops_a_looping_agent_naming_its_cap(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    project_template(root, "dispatch", "max_steps: 3\n")  # over the built-in one, field by field
    model = ScriptedModel([Script(match="[loop]", steps=[LOOKING] * 3)])
    with model:
        async with Hub.open(root, tmp_path / "data", model=model, default_model="scripted") as hub:
            view = await hub.start("[loop] list forever")
            agent = await hub.wait_finished(view.id)

    assert view.max_steps == 3 and view.template == "dispatch"
    assert agent.state == "failed" and agent.steps == 3
    assert agent.reason == (
        "stopped after 3 steps without a report (its own max_steps is 3; the hub's limits.max_steps is 500): give "
        "it a higher max_steps (dispatch run --max-steps, the request's or summon's max_steps, or its template's) "
        "if the task needs more"
    )


@pytest.mark.anyio
async def test_the_hubs_max_steps_stops_it_when_lower_and_says_so(tmp_path: Path) -> None:
    (tmp_path / ".dispatch").mkdir()
    (tmp_path / ".dispatch" / "config.yaml").write_text("limits:\n  max_steps: 2\n")
    with ScriptedModel([Script(match="[loop]", steps=[LOOKING] * 2)]) as model:
        async with AgentTree(tmp_path, model, catalog=Catalog.load(tmp_path)) as tree:
            agent = await tree.run(top_spec("[loop] list forever", max_steps=10))
    assert agent.state is AgentState.failed
    assert agent.reason == (
        "stopped after 2 steps without a report (limits.max_steps is 2): raise it in the config if the task needs more"
    )


@pytest.mark.anyio
async def test_summon_with_max_steps_caps_the_child_and_a_template_may_only_be_lowered(tmp_path: Path) -> None:
    project_template(tmp_path, "looper", "description: loops\ntools: {fs: true}\nmax_steps: 2\n")
    summons = [
        call("summon", task="[child-a] loop", max_steps=1, wait=True),
        call("summon", task="[child-b] loop", template="looper", max_steps=50, wait=True),
        call("summon", task="[child-c] never starts", max_steps=0),
    ]
    model = ScriptedModel(
        [
            Script(match="[parent]", steps=[Reply(tool_calls=[s]) for s in summons] + [Reply(text="all seen")]),
            Script(match="[child-a]", steps=[LOOKING]),
            Script(match="[child-b]", steps=[LOOKING] * 2),
        ]
    )
    with model:
        async with AgentTree(tmp_path, model, catalog=Catalog.load(tmp_path)) as tree:
            parent = await tree.run(top_spec("[parent] delegate"))
            told = tool_messages(model.requests_for("[parent]")[-1].messages)

    assert_done(parent)
    first, second = tree.children_of(parent.id)
    assert (first.spec.max_steps, first.steps_taken, first.state) == (1, 1, AgentState.failed)
    assert first.reason.startswith("stopped after 1 steps without a report (its own max_steps is 1;")
    assert (second.spec.max_steps, second.steps_taken, second.state) == (2, 2, AgentState.failed)
    assert "its own max_steps is 2;" in told[1]
    assert told[2] == (
        "Error executing tool summon: summon refused: max_steps: expected a positive whole number of steps, got 0"
    )


@pytest.mark.anyio
async def test_a_templates_budget_beyond_what_the_parent_has_left_is_refused_naming_it(tmp_path: Path) -> None:
    project_template(tmp_path, "big", "description: big\ntools: {fs: true}\nmax_tokens: 5000\n")
    summons = [
        call("templates"),
        call("summon", task="[big-a] never starts", template="big"),
        call("summon", task="[big-b] within", template="big", max_tokens=400, wait=True),
    ]
    model = ScriptedModel(
        [
            Script(
                match="[parent]",
                steps=[Reply(tool_calls=[s], usage=(10, 0)) for s in summons] + [Reply(text="ok", usage=(10, 0))],
            ),
            Script(match="[big-b]", steps=[Reply(text="done within", usage=(10, 0))]),
        ]
    )
    with model:
        async with AgentTree(tmp_path, model, catalog=Catalog.load(tmp_path)) as tree:
            parent = await tree.run(top_spec("[parent] delegate", max_tokens=1000))
            told = tool_messages(model.requests_for("[parent]")[-1].messages)

    assert_done(parent)
    assert "- big: big [tools: fs] [caps: 5000 tokens]" in told.pop(0).splitlines()
    assert told[0] == (
        "Error executing tool summon: summon refused: max_tokens 5000 is more than you have left (980); template "
        "'big' gives each of its agents max_tokens 5000: summon it with less"
    )
    (child,) = tree.children_of(parent.id)
    assert child.spec.max_tokens == 400 and child.state is AgentState.done


def test_dispatch_run_max_steps_exits_1_naming_it(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script("[cli-loop]", [LOOKING] * 3)

    done = dispatch(
        "run", "[cli-loop] list forever", "-m", "openai/scripted", "--root", str(tmp_path), "--max-steps", "3"
    )

    assert done.returncode == 1, done.stderr
    assert "error: stopped after 3 steps without a report (its own max_steps is 3;" in done.stderr
    assert "Traceback" not in done.stderr


def test_dispatch_run_budget_exits_1_with_reason_budget(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    root = priced_project(tmp_path / "project", scripted_llm)
    scripted_llm.script("[cli-spend]", [LOOKING, LOOKING])

    done = dispatch("run", "[cli-spend] look around forever", "--root", str(root), "--budget", "0.05", "--json")

    assert done.returncode == 1, done.stderr
    out = json.loads(done.stdout)
    assert (out["state"], out["error"]) == ("failed", "budget: spent $0.06 of its $0.05 budget")


# -- bad values: one line naming the field -------------------------------------------------------------


@pytest.mark.anyio
async def test_bad_caps_are_refused_in_one_line_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    with ScriptedModel() as model:
        async with (
            Hub.open(tmp_path / "root", tmp_path / "data", model=model, default_model="scripted") as hub,
            api(hub) as client,
            Client(mcp_hub.build_server(hub)) as mcp,
        ):
            refused = [
                await client.post("/api/agents", json={"task": "x", "budget_usd": -1}),
                await client.post("/api/agents", json={"task": "x", "max_steps": 0}),
                await client.post("/api/chats", json={"max_tokens": 0}),
                await client.post("/api/chats", json={"max_tokens": 2**64}),  # past what SQLite stores
            ]
            failed, said = await tool(mcp, "start", task="x", max_steps=-3)
            assert await hub.agents() == [] and (await hub.chats()) == []

    assert [(r.status_code, r.json()["detail"]) for r in refused] == [
        (400, "budget_usd: expected a positive number of US dollars, got -1.0"),
        (400, "max_steps: expected a positive whole number of steps, got 0"),
        (400, "max_tokens: expected a positive whole number of tokens, got 0"),
        (400, "max_tokens: expected at most 9223372036854775807, got 18446744073709551616"),
    ]
    assert failed and said == "Error executing tool start: max_steps: expected a positive whole number of steps, got -3"


def test_dispatch_run_refuses_a_bad_cap_with_exit_2_naming_the_option(tmp_path: Path) -> None:
    env_model = ("-m", "openai/scripted", "--root", str(tmp_path))
    budget = dispatch("run", "x", *env_model, "--budget", "0")
    steps = dispatch("run", "x", *env_model, "--max-steps", "-1")

    assert (budget.returncode, budget.stderr.strip()) == (
        2,
        "error: --budget: expected a positive number of US dollars, got 0.0",
    )
    assert (steps.returncode, steps.stderr.strip()) == (
        2,
        "error: --max-steps: expected a positive whole number of steps, got -1",
    )


def test_a_templates_bad_cap_names_the_file_line_and_field(tmp_path: Path) -> None:
    project_template(tmp_path, "dispatch", "budget_usd: -2\n")
    with pytest.raises(ConfigError) as refused:
        Catalog.load(tmp_path)
    assert str(refused.value) == (
        f"{tmp_path / '.dispatch' / 'templates' / 'dispatch.yaml'} line 1: budget_usd: expected greater than 0, got -2"
    )


@pytest.mark.anyio
async def test_a_resumed_agent_keeps_its_caps_and_counts_on_from_its_steps(tmp_path: Path) -> None:
    root, data = tmp_path / "root", tmp_path / "data"
    root.mkdir()
    lost = Reply(text="lost with the hub", delay_s=3)
    model = ScriptedModel([Script(match="[resumed]", steps=[LOOKING, lost, LOOKING, LOOKING])])
    with model:
        async with Hub.open(root, data, model=model, default_model="scripted") as hub:
            started = await hub.start("[resumed] list forever", caps=Caps(max_steps=3, max_tokens=10_000))
            with anyio.fail_after(30):
                while len(model.requests_for("[resumed]")) < 2:
                    await anyio.sleep(0.02)
        async with Hub.open(root, data, model=model, default_model="scripted") as hub:
            stored = hub.view(started.id)
            await hub.resume(started.id)
            ended = await hub.wait_finished(started.id)

    assert (stored.state, stored.steps, stored.max_steps, stored.max_tokens) == ("interrupted", 1, 3, 10_000)
    assert (ended.state, ended.steps, ended.max_steps, ended.tokens_in) == ("failed", 3, 3, 90)
    assert ended.reason.startswith("stopped after 3 steps without a report (its own max_steps is 3;")
