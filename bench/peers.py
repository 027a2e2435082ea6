"""The fleet (:mod:`bench.fleet`) side by side with a peer, on this machine, interleaved: for each
size N and round, Dispatch (a real ``dispatch serve``, as in the fleet) and then openai-agents
(:mod:`bench.peer_openai_agents`, in the interpreter ``--python`` names, which has
``openai-agents`` installed), each against its own fresh model process (:mod:`bench.fanout_model`,
50 ms a call). Both count the CPU of everything they run but the model: the hub's process tree, or
the peer's process and its MCP server.

Prints, for each N and tool, each round's wall time and CPU, then their medians and the failures
of all rounds. The peer's environment is the user's to make, e.g.
``python -m venv peer && peer/bin/pip install openai-agents``; it is not part of the project's,
so the test suite does not run this one.

``python -m bench.peers --python PEER_PYTHON [--agents 100,500] [--rounds 3] [--latency-ms 50] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from bench._common import free_port, report_value, stop_process, wait_healthy
from bench.fleet import NOTES, fleet_run

PEER = Path(__file__).with_name("peer_openai_agents.py")


@dataclass
class Runs:
    """One tool's runs at one size."""

    wall_s: list[float] = field(default_factory=list[float])
    cpu_s: list[float] = field(default_factory=list[float])
    failures: int = 0


def peer_run(python: str, agents: int, latency_ms: float) -> dict[str, float]:
    """One run of openai-agents on the fleet's workload: its JSON line."""
    with tempfile.TemporaryDirectory(prefix="dispatch-bench-peer-") as tmp:
        project = Path(tmp)
        (project / "notes.txt").write_text(NOTES)
        port = free_port()
        model = subprocess.Popen(
            [sys.executable, "-m", "bench.fanout_model", "--port", str(port), "--latency-ms", str(latency_ms)],
            text=True,
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}/stats")
            command = [python, str(PEER), "--agents", str(agents), "--model-url", f"http://127.0.0.1:{port}/v1"]
            done = subprocess.run([*command, "--project", str(project)], capture_output=True, text=True, check=False)
        finally:
            stop_process(model)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
        raise SystemExit(f"bench.peers: {python} {PEER.name} exited with {done.returncode}: {last}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _report(name: str, runs: Runs) -> None:
    for index, (wall, cpu) in enumerate(zip(runs.wall_s, runs.cpu_s, strict=True), 1):
        report_value(f"{name}, round {index}, wall", wall * 1000, "ms")
        report_value(f"{name}, round {index}, CPU", cpu * 1000, "ms")
    report_value(f"{name}, wall median", statistics.median(runs.wall_s) * 1000, "ms")
    report_value(f"{name}, CPU median", statistics.median(runs.cpu_s) * 1000, "ms")
    report_value(f"{name}, failures", runs.failures, "agents")


async def main(python: str, sizes: list[int], rounds: int, latency_ms: float) -> None:
    for agents in sizes:
        ours, theirs = Runs(), Runs()
        for _ in range(rounds):
            run = await fleet_run(agents, 1, latency_ms)
            ours.wall_s.append(run.wall_s)
            ours.cpu_s.append(run.cpu_s)
            ours.failures += run.failures
            peer = await anyio.to_thread.run_sync(peer_run, python, agents, latency_ms)
            theirs.wall_s.append(peer["wall_s"])
            theirs.cpu_s.append(peer["cpu_s"])
            theirs.failures += int(peer["failures"])
        _report(f"dispatch {agents}", ours)
        _report(f"openai-agents {agents}", theirs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="an interpreter with openai-agents installed")
    parser.add_argument("--agents", default="100,500", help="fleet sizes (default 100,500)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tool at each size (default 3)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="model latency per call (default 50)")
    parser.add_argument("--quick", action="store_true", help="one round of 10 agents")
    args = parser.parse_args()
    sizes, rounds = ([10], 1) if args.quick else ([int(n) for n in args.agents.split(",")], args.rounds)
    anyio.run(main, args.python, sizes, rounds, args.latency_ms)
