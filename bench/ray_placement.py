"""The same tree of agents with its tool servers in the hub's process, then on a Ray cluster.

A top agent summons L leaves (4 by default); each leaf runs one CPU-bound command through its
``shell`` server (a Python loop of 2 CPU seconds, in the sandbox) and reports. Run once with
``execution.engine: local`` and once with ``engine: ray`` on a cluster of two nodes simulated on
this machine (Ray's ``cluster_utils``; each leaf's tool host asks for one CPU, so they spread over
both nodes), or with ``--address`` on a real cluster the hub joins. Prints, for each: the wall
time of the tree, the hub process's own CPU, the machine's CPU meanwhile (every process's, other
load included), and the CPU of the tool hosts by node (their processes and commands, Ray's worker
start-up included).

``python -m bench.ray_placement [--leaves L] [--seconds S] [--address HOST:PORT] [--quick]`` (needs the ray
extra). On two simulated nodes of one machine the wall time cannot drop below what its cores allow:
the figure to read there is the hub's CPU, which the commands no longer add to.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench._common import report_value
from dispatch.hub.llm.scripted import Reply, ScriptedModel, ToolCall
from dispatch.hub.mounts.cluster import RayEngine
from dispatch.hub.service.hub import Hub

MODEL = "openai/scripted"
LEAF = "name: leaf\ntools: {fs: true, shell: true}\nplacement:\n  resources: {CPU: 1}\n"


def _command(seconds: float) -> str:
    loop = f"import time; end = time.process_time() + {seconds}; any(time.process_time() > end for _ in iter(int, 1))"
    return f'python3 -c "{loop}"'


def _script(model: ScriptedModel, leaves: int, seconds: float) -> None:
    summons = [
        ToolCall("summon", {"task": f"[leaf-{n}] work", "name": f"leaf-{n}", "template": "leaf"}) for n in range(leaves)
    ]
    waits = [Reply(tool_calls=[ToolCall("wait")]) for _ in range(leaves)]
    model.script("[top]", [Reply(tool_calls=summons), *waits, Reply(text="done")])
    for n in range(leaves):
        run = ToolCall("run", {"command": _command(seconds), "timeout_s": 120})
        model.script(f"[leaf-{n}]", [Reply(tool_calls=[run]), Reply(text=f"leaf {n} done")])


def _machine_cpu() -> float:
    """CPU seconds of the whole machine so far (/proc/stat: user, nice, system), every process's."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:4]
    return sum(int(f) for f in fields) / os.sysconf("SC_CLK_TCK")


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


async def run_tree(label: str, execution: str, leaves: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, data = Path(tmp) / "project", Path(tmp) / "data"
        (root / ".dispatch" / "templates").mkdir(parents=True)
        (root / ".dispatch" / "config.yaml").write_text(f"execution:\n{execution}")
        (root / ".dispatch" / "templates" / "leaf.yaml").write_text(LEAF)
        model = ScriptedModel()
        _script(model, leaves, seconds)
        engine: Any = None
        with model:
            async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
                engine = hub.tree.hosts
                hub_cpu, machine, started = _cpu(resource.RUSAGE_SELF), _machine_cpu(), time.perf_counter()
                top = await hub.start("[top] work", model=MODEL)
                state = (await hub.wait_finished(top.id)).state
                wall = time.perf_counter() - started
                hub_cpu, machine = _cpu(resource.RUSAGE_SELF) - hub_cpu, _machine_cpu() - machine
                nodes = {v.name: v.placement.node_id for v in await hub.agents()}
        placed = sorted({str(n)[:12] for name, n in nodes.items() if name != "dispatch"})
        print(f"{label}: the tree {state}; leaves placed on {placed}")
        report_value(f"{label} wall", wall, "s")
        report_value(f"{label} hub CPU", hub_cpu, "s")
        report_value(f"{label} machine CPU (every process)", machine, "s")
        if isinstance(engine, RayEngine):
            for node, spent in sorted(engine.cpu_by_node.items()):
                report_value(f"{label} node {node[:12]}", spent, "CPU s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0, help="CPU seconds of each leaf's command")
    parser.add_argument("--address", help="a Ray cluster to join instead of simulating one")
    parser.add_argument("--quick", action="store_true", help="2 leaves of 0.2 s, to check the benchmark runs")
    args = parser.parse_args()
    if args.quick:
        args.leaves, args.seconds = 2, 0.2
    print(f"{args.leaves} leaves, each a command of {args.seconds:g} CPU seconds; {os.cpu_count()} cores here")
    anyio.run(run_tree, "local", "  engine: local\n", args.leaves, args.seconds)
    if args.address is not None:
        anyio.run(run_tree, "ray", f"  engine: ray\n  address: {args.address}\n", args.leaves, args.seconds)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway cluster of this machine
    from ray.cluster_utils import Cluster  # pyright: ignore[reportMissingTypeStubs]

    cluster: Any = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        anyio.run(run_tree, "ray", f"  engine: ray\n  address: {cluster.address}\n", args.leaves, args.seconds)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
