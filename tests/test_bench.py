"""The benchmarks run (with --quick) and print their figures, so they cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BENCHMARKS = {
    "long_agent": (
        "long, whole, tokens sent",
        "long, whole, billed",
        "long, compacting, compactions",
        "long, compacting, tokens sent",
        "long, compacting, billed uncached",
    ),
    "model_calls": (
        "model call, 10 msgs",
        "model call, 10 msgs, worker CPU",
        "model call, 100 msgs",
        "model call, 100 msgs, worker CPU",
    ),
    "fleet": (
        "fleet 10, wall",
        "fleet 10, CPU",
        "fleet 10, failures",
        "long agent, CPU per step",
        "long agent, bare POST per step",
        "long agent, step / floor",
    ),
    "spawn_and_tool_calls": (
        "spawn, in-process mounts",
        "spawn, stdio fs + shell",
        "tool call, in-process MCP",
        "tool call, stdio MCP",
        "tool call, direct function",
        "agent step, read_file",
        "agent step, check_messages",
    ),
    "changes": (
        "changes, first snapshot, 200 files",
        "changes, snapshot again, 200 files",
        "changes, write_file, 200 files",
        "changes, write_file tracked, 200 files",
        "changes, added per write, 200 files",
        "changes, command tracked, 200 files",
        "changes, added per write, 10 files",
        "changes, command tracked, 10 files",
    ),
    "shell_command": ("shell command, project of 5 folders", "shell command, project of 200 folders"),
    "start_time": (
        "start, dispatch --help",
        "start, serve to /api/health",
        "start, run to its first request",
        "start, demo to /api/health",
    ),
    "fanout": (
        "fanout, agents",
        "fanout, completion",
        "fanout, peak alive agents",
        "fanout, hub RSS peak",
        "fanout, hub RSS per agent",
        "fanout, event latency",
        "fanout, GET /api/agents",
    ),
    "agents_list": (
        "agents list, agents",
        "agents list, CPU per request",
        "agents list, longest loop slice",
        "agents list, 304: CPU per request",
    ),
    "web_page": (
        "page, first render, 50 agents",
        "page, longest task on opening",
        "page, burst shown in the tree",
        "page, longest task in the burst",
    ),
    "messages": (
        "messages, sent",
        "messages, undelivered",
        "messages, API acknowledgement",
        "messages, delivery overhead",
        "messages, delivered in the hub",
        "messages, ack + delivery after it",
    ),
}


@pytest.mark.parametrize("benchmark", sorted(BENCHMARKS))
def test_benchmark_prints_figures(benchmark: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{benchmark}", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for figure in BENCHMARKS[benchmark]:
        assert figure in done.stdout, f"{figure!r} missing from:\n{done.stdout}"
    for line in done.stdout.splitlines():
        if " median " in line:
            assert " p90 " in line and " p99 " in line and " n=" in line, line
