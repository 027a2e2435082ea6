"""The fleet: N agents at once, each one ``read_file`` through a real MCP server and then an
answer, against a model that takes 50 ms a call (:mod:`bench.fanout_model`, its own process),
through a real ``dispatch serve`` and its API: the workload the peers were measured on
(bench/README.md). And one agent of 120 steps, each a ``read_file``, whose CPU per step is set
beside a bare HTTP post of the same transcript: the floor.

For each N of ``--agents`` (1, 10, 100, 500), a fresh hub; every agent is posted at once
(``POST /api/agents``) and the run lasts until each has ended (an ``agent.state`` event of done or
failed on the WebSocket). Prints, per N:

- fleet N, wall: from the first ``POST`` until the last agent ended;
- fleet N, CPU: the user + system CPU of the hub's whole process tree meanwhile (the hub, its
  model workers and anything else it started, a child it has not reaped included), and of the
  hub's process alone;
- fleet N, peak RSS: the hub's peak, and the sum of its children's peaks;
- fleet N, failures: agents that did not end done.

Then, in a hub of its own, one agent of ``--steps`` steps:

- long agent, CPU per step: the process tree's CPU divided by its model calls (and the hub's alone);
- long agent, bare POST per step: this process's CPU to post each of those calls' request bodies,
  as the model received them, with a bare ``httpx`` client (serialising included): what a model
  call of that size costs at the least;
- long agent, step / floor: the ratio.

``python -m bench.fleet [--agents 1,10,100,500] [--steps 120] [--latency-ms 50] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
from websockets.asyncio.client import connect

from bench._common import report_value
from bench._hub_load import hub_processes

TIMEOUT_S = 600.0
TEMPLATE = """name: reader
description: reads one file and answers
tools:
  fs: [read_file]
instructions: Read what the task says, then answer.
"""
NOTES = "".join(f"line {n}: the fleet's notes, a line of text to read back\n" for n in range(30))
TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it (children are listed under the thread that started them)."""
    found: list[int] = []
    queue = [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                queue.extend(int(child) for child in (task / "children").read_text().split())
            except FileNotFoundError:
                continue
    return found


def own_cpu_s(pid: int) -> float:
    """The CPU seconds of process ``pid`` alone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu_s(pid: int) -> float:
    """The CPU seconds of ``pid``'s process tree: each process's own, plus what its reaped children
    used (a child not reaped is still in the tree, a zombie keeps its times)."""
    total = 0
    for member in _tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / TICK


async def _quiet(pid: int) -> None:
    """Return once ``pid``'s process tree uses under 5% of a core over half a second (60 s at most)."""
    with anyio.move_on_after(60):
        before = tree_cpu_s(pid)
        while True:
            await anyio.sleep(0.5)
            now = tree_cpu_s(pid)
            if now - before < 0.025:
                return
            before = now


def _peak_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


class _Ended:
    """The agents seen ending on the event stream."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.changed = anyio.Event()

    def see(self, event: dict[str, object]) -> None:
        data = event.get("data")
        if event.get("type") == "agent.state" and isinstance(data, dict):
            state = str(data.get("state"))  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType]
            if state in ("done", "failed", "cancelled"):
                self.states[str(event["agent_id"])] = state
                self.changed.set()
                self.changed = anyio.Event()


async def _listen(ws_url: str, ended: _Ended, ready: anyio.Event) -> None:
    async with connect(ws_url, max_size=None) as websocket:
        ready.set()
        async for raw in websocket:
            ended.see(json.loads(raw))


async def _posted(client: httpx.AsyncClient, body: dict[str, str]) -> str:
    """``POST /api/agents``: the new agent's id. Tried again on a pooled connection the server
    closed as the request went out."""
    for attempt in range(3):
        try:
            response = await client.post("/api/agents", json=body)
        except httpx.TransportError:
            if attempt == 2:
                raise
            continue
        response.raise_for_status()
        return str(response.json()["id"])
    raise AssertionError("unreachable: the last attempt returns or raises")


@dataclass
class FleetRun:
    """What one run measured."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    hub_cpu_s: float = 0.0
    hub_peak_mib: float = 0.0
    children_peak_mib: float = 0.0
    failures: int = 0
    floor_s: float = 0.0
    """This process's CPU per bare post of the long agent's requests (0 for a fleet)."""


async def _agents(client: httpx.AsyncClient, ended: _Ended, count: int, reads: int) -> set[str]:
    """Post ``count`` agents at once and return their ids once every one has ended."""
    ids: set[str] = set()

    async def post(index: int) -> None:
        body = {"task": f"agent {index}: read {reads} times", "template": "reader", "model": "bench"}
        ids.add(await _posted(client, body))

    with anyio.fail_after(TIMEOUT_S):
        async with anyio.create_task_group() as posting:
            for index in range(count):
                posting.start_soon(post, index)
        while not ids <= set(ended.states):
            await ended.changed.wait()
    return ids


async def fleet_run(agents: int, reads: int, latency_ms: float) -> FleetRun:
    """Run ``agents`` agents of ``reads`` reads each through a fresh hub and measure them."""
    run = FleetRun()
    model_args = ["--latency-ms", str(latency_ms)]
    with hub_processes(model_args, {"reader": TEMPLATE}, {"notes.txt": NOTES}) as (model_url, hub_url, hub_pid):
        base, _, token = hub_url.partition("?token=")
        ws_url = base.replace("http://", "ws://") + f"/api/events?live=false&token={token}"  # nothing streams
        ended = _Ended()
        limits = httpx.Limits(max_connections=64)
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx.AsyncClient(base_url=base, headers=headers, timeout=120, limits=limits) as client,
            anyio.create_task_group() as group,
        ):
            ready = anyio.Event()
            group.start_soon(_listen, ws_url, ended, ready)
            await ready.wait()
            # out of the figures: the hub's start (its workers load litellm, the others once the
            # first is ready) and each worker's first call (litellm sets up its clients then)
            await _agents(client, ended, 1, 1)
            await _quiet(hub_pid)
            await _agents(client, ended, 8, 1)
            await _quiet(hub_pid)
            cpu_before, hub_before = tree_cpu_s(hub_pid), own_cpu_s(hub_pid)
            started = time.perf_counter()
            ids = await _agents(client, ended, agents, reads)
            run.wall_s = time.perf_counter() - started
            run.cpu_s = tree_cpu_s(hub_pid) - cpu_before
            run.hub_cpu_s = own_cpu_s(hub_pid) - hub_before
            run.hub_peak_mib = _peak_mib(hub_pid)
            run.children_peak_mib = sum(_peak_mib(child) for child in _tree(hub_pid)[1:])
            run.failures = sum(1 for agent in ids if ended.states.get(agent) != "done")
            group.cancel_scope.cancel()
        if reads > 1:
            async with httpx.AsyncClient(timeout=30) as model_client:
                bodies: list[dict[str, object]] = (await model_client.get(model_url + "/bodies")).json()
            run.floor_s = _bare_posts(model_url, bodies)
    return run


def _bare_posts(model_url: str, bodies: list[dict[str, object]]) -> float:
    """This process's CPU seconds per bare ``httpx`` post of each body (serialising included)."""
    with httpx.Client(timeout=30) as client:
        client.post(model_url + "/v1/chat/completions", json=bodies[0])  # the connection open
        started = time.process_time()
        for body in bodies:
            client.post(model_url + "/v1/chat/completions", json=body).raise_for_status()
        return (time.process_time() - started) / len(bodies)


async def main(sizes: list[int], steps: int, latency_ms: float) -> None:
    for agents in sizes:
        run = await fleet_run(agents, 1, latency_ms)
        report_value(f"fleet {agents}, wall", run.wall_s * 1000, "ms")
        report_value(f"fleet {agents}, CPU", run.cpu_s * 1000, "ms")
        report_value(f"fleet {agents}, CPU of the hub alone", run.hub_cpu_s * 1000, "ms")
        report_value(f"fleet {agents}, hub peak RSS", run.hub_peak_mib, "MiB")
        report_value(f"fleet {agents}, children's peak RSS", run.children_peak_mib, "MiB")
        report_value(f"fleet {agents}, failures", run.failures, "agents")
    run = await fleet_run(1, steps, latency_ms)
    per_step = run.cpu_s / (steps + 1)
    report_value(f"long agent, {steps} steps, wall", run.wall_s * 1000, "ms")
    report_value("long agent, failures", run.failures, "agents")
    report_value("long agent, CPU per step", per_step * 1000, "ms")
    report_value("long agent, hub's CPU per step", run.hub_cpu_s / (steps + 1) * 1000, "ms")
    report_value("long agent, bare POST per step", run.floor_s * 1000, "ms")
    report_value("long agent, step / floor", per_step / run.floor_s if run.floor_s else 0.0, "x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default="1,10,100,500", help="fleet sizes (default 1,10,100,500)")
    parser.add_argument("--steps", type=int, default=120, help="steps of the long agent (default 120)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="model latency per call (default 50)")
    parser.add_argument("--quick", action="store_true", help="fleets of 1 and 10, a long agent of 10 steps")
    args = parser.parse_args()
    if args.quick:
        anyio.run(main, [1, 10], 10, args.latency_ms)
    else:
        anyio.run(main, [int(n) for n in args.agents.split(",")], args.steps, args.latency_ms)
