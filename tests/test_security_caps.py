"""Caps that keep one runaway agent from taking the hub or the machine down: a catastrophic regular
expression in ``grep``, a fork storm over parallel ``run`` calls, a model that never stops calling
tools, an outside MCP server that never answers. Each test plays the hostile model through a real
hub (or real MCP sessions) and checks that the hub and the host stay usable."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from mcp import Client

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.agents.spec import AgentState
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.config.project import LimitsConfig
from dispatch.hub.events import Event, ToolReturned
from dispatch.hub.llm.scripted import Script, ScriptedModel
from dispatch.servers import shell
from dispatch.servers.fs import server as fs
from dispatch.servers.sandbox import ProcessLimits, choose_shell_mode
from tests.agent_helpers import assert_done, call, tool_messages, top_spec
from tests.api_helpers import MODEL, ServedHub
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.sandbox_helpers import host_is_usable, needs_process_limit, tool
from tests.test_outside_servers import hub_tree, write_config

# -- grep: a pattern that backtracks exponentially --------------------------------------------------


async def _health_while(served: ServedHub, done: anyio.Event) -> list[float]:
    """How long each ``/api/health`` took, asked every 0.1 s until ``done``."""
    seconds: list[float] = []
    async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as http:
        while not done.is_set():
            started = time.monotonic()
            assert (await http.get("/api/health")).status_code == 200
            seconds.append(time.monotonic() - started)
            await anyio.sleep(0.1)
    return seconds


@pytest.mark.anyio
async def test_a_catastrophic_grep_stops_at_its_deadline_and_the_hub_keeps_answering(
    scripted_llm: ScriptedLLM, served: ServedHub, project: Path
) -> None:
    (project / "aaa.txt").write_text("a" * 40 + "!\n")
    nested = call("grep", pattern="^(a|aa)+$", path="aaa.txt")  # exponential in a backtracking engine
    issue = call("grep", pattern="^(a+)+$", path="aaa.txt")  # the one from the report
    scripted_llm.script("[redos]", [Reply(tool_calls=[issue]), Reply(tool_calls=[nested]), Reply(text="done")])
    results: list[dict[str, Any]] = []
    latencies: list[float] = []
    done = anyio.Event()

    async def watch() -> None:
        latencies.extend(await _health_while(served, done))

    async with served.client() as http, served.events(since=0) as events, anyio.create_task_group() as group:
        group.start_soon(watch)
        started = await http.post("/api/agents", json={"task": "[redos] search", "model": MODEL})
        assert started.status_code == 201, started.text
        for _ in range(2):
            event = await events.until(lambda e: e["type"] == "tool.result" and e["data"]["name"] == "grep", 60)
            results.append(event["data"])
        done.set()
    assert results[0]["text"] == "no matches for '^(a+)+$' in 'aaa.txt'"
    second = results[1]
    assert second["is_error"] and "grep stopped at its 10 s deadline while searching aaa.txt:1" in second["text"]
    assert 9 < second["seconds"] < 30
    assert len(latencies) > 50 and max(latencies) < 1.0, latencies


@pytest.mark.anyio
async def test_grep_caps_the_pattern_the_repetitions_and_the_line(tmp_path: Path) -> None:
    (tmp_path / "wide.txt").write_text("x" * 20_000 + "needle\nneedle\n")
    (tmp_path / "many.txt").write_text("a" * 30 + "!\n" * 3)
    server = fs.build_server(tmp_path, grep_seconds=0.5)
    async with Client(server) as client:
        text, is_error = await tool(client, "grep", pattern="a" * 1001)
        assert is_error and text.endswith(": the pattern is 1001 characters long; grep takes at most 1000")
        text, is_error = await tool(client, "grep", pattern="a{10000000}")  # would compile to gigabytes
        assert is_error and "the repetition counts of 'a{10000000}' multiply to more than 100,000" in text
        text, is_error = await tool(client, "grep", pattern="(?:(?:a{100}){100}){100}")
        assert is_error and "multiply to more than 100,000" in text
        text, is_error = await tool(client, "grep", pattern="needle", path="wide.txt")
        assert not is_error and text == (
            "wide.txt:2: needle\n[1 line longer than 10,000 characters: only the first 10,000 searched]"
        )
        started = time.monotonic()
        text, is_error = await tool(client, "grep", pattern="(x|xx)+y|(a|aa)+$")
        assert is_error and "grep stopped at its 0.5 s deadline while searching many.txt:1 (0 matching" in text
        assert time.monotonic() - started < 5


# -- outside MCP servers: a tool call that never returns --------------------------------------------


HANGING_SERVER = """
import anyio
from mcp.server.mcpserver import MCPServer

server = MCPServer("hanging", log_level="WARNING")

@server.tool()
async def hang() -> str:
    \"\"\"Never returns.\"\"\"
    await anyio.sleep_forever()
    return "unreachable"

@server.tool()
def echo(text: str) -> str:
    \"\"\"Echo the text back.\"\"\"
    return f"echo: {text}"

server.run("stdio")
"""


@pytest.mark.anyio
async def test_an_outside_tool_that_never_returns_is_cancelled_at_the_servers_timeout(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    (tmp_path / "hanging.py").write_text(HANGING_SERVER)
    write_config(root, {"probe": {"command": sys.executable, "args": [str(tmp_path / "hanging.py")], "timeout_s": 1.5}})
    steps = [Reply(tool_calls=[call("hang")]), Reply(tool_calls=[call("echo", text="still here")]), Reply(text="ok")]
    scripted_llm.script("[hang]", steps)
    async with hub_tree(root) as (tree, _):
        started = time.monotonic()
        with anyio.fail_after(60):
            agent = await tree.run(top_spec("[hang] call the slow tool"))
    assert_done(agent)
    hung, echoed = tool_messages(scripted_llm.requests_for("[hang]")[-1].messages)
    assert "the outside MCP server 'probe' did not answer hang within 1.5 s (mcp_servers.probe.timeout_s)" in hung
    assert "echo: still here" in echoed  # the shared connection still serves
    assert time.monotonic() - started < 30


# -- a runaway model: too many steps, too many tool calls in one answer -----------------------------


def _drained(stream: MemoryObjectReceiveStream[Event]) -> list[Event]:
    """The events waiting in ``stream``."""
    found: list[Event] = []
    while True:
        try:
            found.append(stream.receive_nowait())
        except anyio.WouldBlock:
            return found


@pytest.mark.anyio
async def test_a_looping_model_is_stopped_at_the_default_max_steps(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a\n")
    looping = [Reply(tool_calls=[call("list_dir", path=".")])] * LimitsConfig().max_steps
    started = time.monotonic()
    with ScriptedModel([Script(match="[loop]", steps=looping)]) as model:  # every step used, and no more
        async with AgentTree(tmp_path, model) as tree:
            agent = await tree.run(top_spec("[loop] list forever"))
    assert agent.state is AgentState.failed
    assert agent.reason == (
        "stopped after 500 steps without a report (limits.max_steps is 500): raise it in the config if the task "
        "needs more"
    )
    assert agent.steps_taken == 500 and time.monotonic() - started < 60


@pytest.mark.anyio
async def test_max_steps_comes_from_the_config(tmp_path: Path) -> None:
    (tmp_path / ".dispatch").mkdir()
    (tmp_path / ".dispatch" / "config.yaml").write_text("limits:\n  max_steps: 3\n")
    looping = [Reply(tool_calls=[call("list_dir", path=".")])] * 3
    with ScriptedModel([Script(match="[loop]", steps=looping)]) as model:
        async with AgentTree(tmp_path, model, catalog=Catalog.load(tmp_path)) as tree:
            agent = await tree.run(top_spec("[loop] list forever"))
    assert agent.state is AgentState.failed and agent.reason.startswith("stopped after 3 steps")


@pytest.mark.anyio
async def test_3000_tool_calls_in_one_answer_run_64_and_the_rest_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a\n")
    flood = Reply(tool_calls=[call("list_dir", path=".")] * 3000)
    with ScriptedModel([Script(match="[flood]", steps=[flood, Reply(text="done")])]) as model:
        async with AgentTree(tmp_path, model) as tree, tree.events.subscribe() as events:
            agent = await tree.run(top_spec("[flood] list everything at once"))
            results = [e for e in _drained(events) if isinstance(e.data, ToolReturned)]
    assert_done(agent)
    answers = tool_messages(model.requests_for("[flood]")[-1].messages)
    assert len(answers) == 3000
    ran = [a for a in answers if "a.txt" in a]
    refused = [a for a in answers if a.startswith("Error: not run: one answer may make at most 64 tool calls")]
    assert len(ran) == 64 and len(refused) == 2936
    assert "(limits.tool_calls_per_step) and this one made 3000" in refused[0]
    assert len(results) == 64, "only the calls that ran reached a server"


# -- processes: one agent's parallel commands share one cap ----------------------------------------

STORM = (  # no fork but the sleeps: a fork refused at the cap may end the shell, and the trap still reports
    "trap 'echo end $EPOCHREALTIME' EXIT; echo start $EPOCHREALTIME;"
    " for ((i = 0; i < 90; i++)); do sleep 2.3456 & done 2>/dev/null; wait 2>/dev/null"
)


@contextmanager
def _peak_count(marker: bytes) -> Iterator[list[int]]:
    """The most processes with command line ``marker`` seen at once while inside (``[0]``),
    sampled every 50 ms in a thread."""
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _count(marker))
            stop.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def _count(marker: bytes) -> int:
    count = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "cmdline").read_bytes() == marker:
                count += 1
        except OSError:
            continue
    return count


@needs_process_limit
@pytest.mark.anyio
async def test_twelve_parallel_fork_storms_of_one_agent_stay_under_its_process_cap(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / ".dispatch").mkdir(parents=True)
    config = "limits:\n  processes: {agent: 150, command: 100}\n"
    (root / ".dispatch" / "config.yaml").write_text(config)
    storm = Reply(tool_calls=[call("run", command=STORM, timeout_s=60)] * 12)
    with ScriptedModel([Script(match="[storm]", steps=[storm, Reply(text="done")])]) as model:
        async with AgentTree(root, model, catalog=Catalog.load(root)) as tree:
            with _peak_count(b"sleep\x002.3456\x00") as sampled:
                agent = await tree.run(top_spec("[storm] fork a lot, twelve times at once"))
    peak = sampled[0]
    assert_done(agent)
    answers = tool_messages(model.requests_for("[storm]")[-1].messages)
    assert len(answers) == 12
    refused = [a for a in answers if "start " not in a]  # the agent's cap was full: not even bwrap could fork
    assert all("Resource temporarily unavailable" in a for a in refused), refused
    capped = "[sandbox: this agent's commands together reached 150 processes (limits.processes.agent); forks past"
    assert sum(capped in a for a in answers) >= 2, answers
    ran = [a for a in answers if a not in refused]
    spans = [(float(a.split("start ")[1].split()[0]), float(a.split("end ")[1].split()[0])) for a in ran]
    assert max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans) <= 4, "at most 4 commands at once"
    assert 50 < peak <= 150, f"{peak} processes at once"
    host_is_usable()


async def _run_into(answers: list[str], client: Client) -> None:
    answers.append((await tool(client, "run", command=STORM, timeout_s=60))[0])


@needs_process_limit
@pytest.mark.anyio
async def test_the_hubs_total_holds_over_two_agents(tmp_path: Path) -> None:
    answers: list[str] = []
    limits = ProcessLimits(total=120, agent=1000, command=1000)
    shells = [
        shell.build_server(tmp_path, launcher=choose_shell_mode(tmp_path, [tmp_path], limits=limits).sandbox)
        for _ in range(2)
    ]
    with _peak_count(b"sleep\x002.3456\x00") as sampled:
        async with Client(shells[0]) as first, Client(shells[1]) as second, anyio.create_task_group() as storms:
            for client in (first, second) * 2:
                storms.start_soon(partial(_run_into, answers, client))
    peak = sampled[0]
    assert 50 < peak <= 120, f"{peak} processes at once"
    capped = "[sandbox: the commands of every agent together reached 120 processes (limits.processes.total)"
    assert sum(capped in a for a in answers) >= 2, answers
    host_is_usable()
