"""The benchmarks run (with --quick) and print their figures, so they cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_spawn_and_tool_call_benchmark_prints_figures() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.spawn_and_tool_calls", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for figure in (
        "spawn, in-process mounts",
        "spawn, stdio fs + shell",
        "tool call, in-process MCP",
        "tool call, stdio MCP",
        "tool call, direct function",
    ):
        assert figure in done.stdout
    assert done.stdout.count(" ms ") >= 5
