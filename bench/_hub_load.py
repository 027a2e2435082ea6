"""A real hub under load, for the fan-out and messages benchmarks.

Starts, each in its own process, the fan-out model (:mod:`bench.fanout_model`) and ``dispatch
serve`` on a temporary project whose config points the model ``bench`` at it, then drives the hub
only through its API, as a user's client would: the top agent through ``POST /api/agents``, every
event through the ``/api/events`` WebSocket, ``GET /api/agents`` polled every 100 ms, and, when
asked, messages to running leaves through ``POST /api/agents/{id}/messages``. Once every agent of
the tree exists it releases the model's held leaves, so all are alive at once.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from websockets.asyncio.client import connect

from bench._common import free_port, stop_process, wait_healthy

TIMEOUT_S = 300.0
ALIVE = {"pending", "running", "waiting_children", "waiting_user", "waiting_key", "waiting_disk", "queued"}
LEAF = re.compile(r"part \d+\.\d+ of level 2")

TEMPLATE = """name: fanout
description: a benchmark orchestrator
tools:
  summon: true
max_children: {max_children}
instructions: Fan out as the benchmark model says.
"""

CONFIG = """models:
  keys:
    - name: bench
      provider: openai
      key: sk-bench
      base_url: {base_url}
      models:
        bench: {{tags: [bench]}}
"""


@dataclass
class Sent:
    """A message the benchmark sent: when it posted, when the hub acknowledged, to whom."""

    agent_id: str
    posted: float
    acked: float


@dataclass
class LoadResult:
    agents: int = 0
    completion_s: float = 0.0
    peak_alive: int = 0
    rss_start_mib: float = 0.0
    rss_peak_mib: float = 0.0
    worker_rss_peak_mib: float = 0.0
    model_calls: int = 0
    event_latencies: list[float] = field(default_factory=list[float])
    list_latencies: list[float] = field(default_factory=list[float])
    ack_latencies: list[float] = field(default_factory=list[float])
    delivery_overheads: list[float] = field(default_factory=list[float])
    hub_delivery_overheads: list[float] = field(default_factory=list[float])
    ack_and_delivery: list[float] = field(default_factory=list[float])
    undelivered: int = 0


def tree_parser(description: str | None) -> argparse.ArgumentParser:
    """The options every benchmark on this harness takes: the tree's shape and ``--quick``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, default=20, help="children of the top agent (default 20)")
    parser.add_argument("--grandchildren", type=int, default=25, help="children of each child (default 25)")
    parser.add_argument("--quick", action="store_true", help="a 1 → 3 → 3 tree, to check the benchmark runs")
    return parser


def _memory_mib(pid: int, field_name: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field_name}")


def _worker_peak_mib(hub_pid: int) -> float:
    """The peak resident memory of the hub's model worker processes together (0 when it has none)."""
    tasks = Path(f"/proc/{hub_pid}/task").iterdir()  # a child is listed under the thread that started it
    children = [child for task in tasks for child in (task / "children").read_text().split()]
    workers = [c for c in children if b"dispatch.hub.llm.model_worker" in Path(f"/proc/{c}/cmdline").read_bytes()]
    return sum(_memory_mib(int(worker), "VmHWM") for worker in workers)


@contextmanager
def hub_processes(
    model_args: list[str], templates: dict[str, str], files: dict[str, str], profile: Path | None = None
) -> Iterator[tuple[str, str, int]]:
    """The model (:mod:`bench.fanout_model` with ``model_args``) and ``dispatch serve`` on a
    project with ``templates`` (name: YAML) and ``files`` (path: text), running; yields the model's
    URL, the hub's URL with its token, and the hub's pid. With ``profile``, the hub runs under
    cProfile, which writes its stats there."""
    with tempfile.TemporaryDirectory(prefix="dispatch-bench-") as tmp:
        root, home = Path(tmp, "project"), Path(tmp, "home")
        (root / ".dispatch" / "templates").mkdir(parents=True)
        home.mkdir()
        for name, text in files.items():
            (root / name).write_text(text)
        model_port = free_port()
        model_url = f"http://127.0.0.1:{model_port}"
        (root / ".dispatch" / "config.yaml").write_text(CONFIG.format(base_url=model_url + "/v1"))
        for name, text in templates.items():
            (root / ".dispatch" / "templates" / f"{name}.yaml").write_text(text)
        # the hub's own model workers (no model host): its process tree is all the work, to be counted
        env = {**os.environ, "DISPATCH_HOME": str(home / "data"), "HOME": str(home), "DISPATCH_MODEL_HOST": "off"}
        model = subprocess.Popen(
            [sys.executable, "-m", "bench.fanout_model", "--port", str(model_port), *model_args], env=env, text=True
        )
        profiler = ["-m", "cProfile", "-o", str(profile.resolve())] if profile is not None else []
        hub = subprocess.Popen(
            [sys.executable, *profiler, "-m", "dispatch.hub.cli", "serve", "--port", "0", "--root", str(root)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert hub.stdout is not None
            line = hub.stdout.readline()
            found = re.match(r"(http://[^/]+)/\?token=(\S+)", line)
            if found is None:
                raise RuntimeError(f"dispatch serve printed {line!r}")
            wait_healthy(model_url + "/stats")
            yield model_url, f"{found[1]}?token={found[2]}", hub.pid
        finally:
            stop_process(hub)
            stop_process(model)


class _Run:
    """One load run: the listeners' shared view of the tree."""

    def __init__(self, expected: int, messages: int, result: LoadResult) -> None:
        self.expected = expected
        self.messages = messages
        self.result = result
        self.states: dict[str, str] = {}
        self.leaves: list[str] = []
        self.top_id: str | None = None
        self.all_spawned = anyio.Event()
        self.finished = anyio.Event()
        self.sent: dict[str, Sent] = {}
        self.failures: list[str] = []
        self.boundary: dict[str, float] = {}
        """Per agent: the time of its latest tool call or result or step: its latest boundary (the
        leaves' tool, ``check_messages``, takes its messages inside the call; a step's end takes
        what came during its model call)."""

    def alive(self) -> int:
        return sum(1 for state in self.states.values() if state in ALIVE)

    def on_event(self, event: dict[str, Any], received: float) -> None:
        kind, agent, data = event["type"], event["agent_id"], event["data"]
        if kind == "agent.state":
            self.result.event_latencies.append(received - event["at"])
            self.states[agent] = data["state"]
            if data["state"] == "failed":
                self.failures.append(str(data.get("reason", "")))
            self.result.peak_alive = max(self.result.peak_alive, self.alive())
            if agent == self.top_id and data["state"] in {"done", "failed", "cancelled"}:
                self.finished.set()
        elif kind == "agent.spawned":
            self.states.setdefault(agent, "pending")
            if LEAF.search(str(data.get("task", ""))):
                self.leaves.append(agent)
            if len(self.states) >= self.expected:
                self.all_spawned.set()
        elif kind in ("tool.call", "tool.result", "agent.step"):
            # a boundary: in `check_messages`, after a tool, or after the model's answer (an answer
            # without tool calls reads what waits, and goes on with it rather than reporting)
            self.boundary[agent] = event["at"]
        elif kind == "message.delivered" and (sent := self.sent.pop(str(data.get("message_id")), None)):
            boundary = self.boundary.get(agent, 0.0)
            # the API call until delivery, minus the wait for the boundary (the model's and the
            # tool's time, not the hub's): from the later of the call and the boundary
            self.result.delivery_overheads.append(received - max(sent.posted, boundary))
            # the same, up to the moment the hub delivered it (without the event's way to the client)
            self.result.hub_delivery_overheads.append(max(0.0, event["at"] - max(sent.posted, boundary)))
            # stricter: the whole acknowledgement, then from the later of the ack and the boundary
            # (counts the ack even where it overlapped the wait for the boundary)
            self.result.ack_and_delivery.append((sent.acked - sent.posted) + (received - max(sent.acked, boundary)))


async def _listen(ws_url: str, run: _Run, ready: anyio.Event) -> None:
    async with connect(ws_url, max_size=None) as websocket:
        ready.set()
        async for raw in websocket:
            received = time.time()
            run.on_event(json.loads(raw), received)


async def _poll_agents(client: httpx.AsyncClient, run: _Run) -> None:
    while not run.finished.is_set():
        started = time.perf_counter()
        response = await client.get("/api/agents")
        response.raise_for_status()
        run.result.list_latencies.append(time.perf_counter() - started)
        await anyio.sleep(0.1)


async def _send_messages(client: httpx.AsyncClient, run: _Run) -> None:
    await run.all_spawned.wait()
    chooser = random.Random(7)
    for index in range(run.messages):
        running = [a for a in run.leaves if run.states.get(a) == "running"]
        if not running or run.finished.is_set():
            break
        agent = chooser.choice(running)
        posted = time.time()
        response = await client.post(
            f"/api/agents/{agent}/messages", json={"text": f"benchmark note {index}", "kind": "context"}
        )
        acked = time.time()
        if response.status_code != 202:
            continue  # it finished meanwhile
        run.sent[response.json()["message_id"]] = Sent(agent, posted, acked)
        run.result.ack_latencies.append(acked - posted)
        await anyio.sleep(0.02)


async def run_load(
    children: int,
    grandchildren: int,
    latency_ms: float,
    *,
    rounds: int = 1,
    messages: int = 0,
    profile: Path | None = None,
) -> LoadResult:
    """Run the tree ``1 → children → grandchildren`` through a real hub and measure it."""
    expected = 1 + children + children * grandchildren
    result = LoadResult()
    model_args = [
        *("--children", str(children), "--grandchildren", str(grandchildren)),
        *("--latency-ms", str(latency_ms), "--rounds", str(rounds)),
    ]
    templates = {"fanout": TEMPLATE.format(max_children=max(children, grandchildren, 1))}
    with hub_processes(model_args, templates, {}, profile) as (model_url, hub_url, hub_pid):
        base, _, token = hub_url.partition("?token=")
        ws_url = base.replace("http://", "ws://") + f"/api/events?live=false&token={token}"  # nothing streams
        headers = {"Authorization": f"Bearer {token}"}
        run = _Run(expected, messages, result)
        async with (
            httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client,
            anyio.create_task_group() as group,
        ):
            ready = anyio.Event()
            group.start_soon(_listen, ws_url, run, ready)
            await ready.wait()
            result.rss_start_mib = _memory_mib(hub_pid, "VmRSS")
            started = time.perf_counter()
            response = await client.post(
                "/api/agents", json={"task": "fan out", "template": "fanout", "model": "bench"}
            )
            response.raise_for_status()
            run.top_id = response.json()["id"]
            group.start_soon(_poll_agents, client, run)
            group.start_soon(_send_messages, client, run)
            with anyio.fail_after(TIMEOUT_S):
                await run.all_spawned.wait()
                async with httpx.AsyncClient(timeout=10) as model_client:
                    (await model_client.post(model_url + "/release")).raise_for_status()
                await run.finished.wait()
            result.completion_s = time.perf_counter() - started
            result.rss_peak_mib = _memory_mib(hub_pid, "VmHWM")
            result.worker_rss_peak_mib = _worker_peak_mib(hub_pid)
            await anyio.sleep(0.2)  # the last deliveries
            group.cancel_scope.cancel()
        async with httpx.AsyncClient(timeout=10) as model_client:
            result.model_calls = int((await model_client.get(model_url + "/stats")).json()["calls"])
    result.agents = len(run.states)
    result.undelivered = len(run.sent)
    top_state = run.states.get(run.top_id or "")
    done = sum(1 for state in run.states.values() if state == "done")
    if top_state != "done" or done != expected:
        others = sorted({state for state in run.states.values() if state != "done"})
        raise SystemExit(
            f"fan-out failed: top {top_state}, {done} of {expected} agents done (others: {others}; {run.failures[:3]})"
        )
    return result
