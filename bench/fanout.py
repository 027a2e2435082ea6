"""Fan-out: a tree of 1 → N → M agents alive at once against an in-process fake model that takes
50 ms per call.

The top agent summons N children at once and waits for them; each child summons M grandchildren
at once and waits for them; each grandchild answers. Every parent's ``max_children`` is large
enough that all of them run together. Prints:

- fanout, completion: from starting the top agent until it has finished (one sample);
- fanout, peak alive agents: the most agents that were running or waiting at once;
- fanout, RSS peak / growth / per agent: this process's resident memory (sampled every 50 ms)
  at its peak, its growth over the run, and that growth divided by the number of agents;
- fanout, event latency: from an agent's state change (the event's timestamp, taken as the
  state is set) to an EventBus subscriber receiving it, over every ``agent.state`` event.

``python -m bench.fanout [--children N] [--grandchildren M] [--latency-ms L] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from itertools import count
from pathlib import Path

import anyio

from bench._common import peak_rss_mib, report, report_value, rss_mib
from dispatch.hub.agent import Agent, AgentSpec, AgentState
from dispatch.hub.events import EventBus
from dispatch.hub.grants import Grants
from dispatch.hub.ids import new_id
from dispatch.hub.llm.client import Completion, JsonDict, ToolCallRequest, Usage
from dispatch.hub.tree import AgentTree

ALIVE = {AgentState.running, AgentState.waiting_children, AgentState.waiting_user, AgentState.waiting_key}


class FanoutModel:
    """A model that answers after ``latency_s``: an orchestrator first summons its children (how
    many by its depth), then waits while any is alive, then answers; a leaf answers at once."""

    def __init__(self, fanout: Sequence[int], latency_s: float) -> None:
        self.fanout = fanout
        self.latency_s = latency_s
        self.tree: AgentTree | None = None
        self.calls = 0
        self._summoned: set[str] = set()
        self._ids = count()

    def _depth(self, agent_id: str) -> int:
        assert self.tree is not None
        depth = 0
        spec = self.tree.get(agent_id).spec
        while spec.parent_id is not None:
            depth += 1
            spec = self.tree.get(spec.parent_id).spec
        return depth

    def _call(self, tool: str, **arguments: object) -> ToolCallRequest:
        return ToolCallRequest(id=f"call_{next(self._ids)}", name=tool, arguments=json.dumps(arguments))

    async def complete(
        self, model: str, messages: Sequence[JsonDict], tools: Sequence[JsonDict], *, agent_id: str | None = None
    ) -> Completion:
        await anyio.sleep(self.latency_s)
        self.calls += 1
        assert agent_id is not None and self.tree is not None
        depth = self._depth(agent_id)
        calls: list[ToolCallRequest] = []
        if depth < len(self.fanout) and agent_id not in self._summoned:
            self._summoned.add(agent_id)
            grants = {"summon": True} if depth + 1 < len(self.fanout) else {}
            calls = [
                self._call("summon", task=f"part {i} of level {depth + 1}", name=f"d{depth + 1}-{i}", grants=grants)
                for i in range(self.fanout[depth])
            ]
        elif self.tree.live_children(agent_id):
            calls = [self._call("wait")]
        text = None if calls else "done"
        return Completion(text=text, tool_calls=calls, usage=Usage(), model=model, latency_s=self.latency_s)


async def run(children: int, grandchildren: int, latency_s: float) -> None:
    model = FanoutModel([children, grandchildren], latency_s)
    events = EventBus()
    latencies: list[float] = []
    alive: set[str] = set()
    peak_alive = 0
    baseline = rss_mib()
    peak = baseline

    subscribed = anyio.Event()

    async def listen() -> None:
        nonlocal peak_alive
        async with events.subscribe() as stream:
            subscribed.set()
            async for event in stream:
                if event.type != "agent.state":
                    continue
                latencies.append(time.time() - event.at)
                if AgentState(event.data["state"]) in ALIVE:
                    alive.add(event.agent_id)
                else:
                    alive.discard(event.agent_id)
                peak_alive = max(peak_alive, len(alive))

    async def sample_rss() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_mib())
            await anyio.sleep(0.05)

    async def fan_out(root: Path) -> tuple[Agent, list[Agent], float]:
        async with AgentTree(root, model, events=events) as tree:
            model.tree = tree
            spec = AgentSpec(
                id=new_id(),
                name="top",
                task="fan out",
                model="bench",
                grants=Grants(summon=True),
                max_children=max(children, grandchildren),
            )
            started = time.perf_counter()
            top = await tree.run(spec)
            return top, list(tree.agents.values()), time.perf_counter() - started

    async def watched(root: Path) -> tuple[Agent, list[Agent], float]:
        async with anyio.create_task_group() as watchers:
            watchers.start_soon(listen)
            watchers.start_soon(sample_rss)
            await subscribed.wait()
            result = await fan_out(root)
            await anyio.sleep(0.05)  # let the subscriber drain the last events
            watchers.cancel_scope.cancel()
            return result
        raise AssertionError("unreachable: the task group re-raises what a watcher raises")

    with tempfile.TemporaryDirectory() as tmp:
        top, agents, elapsed = await watched(Path(tmp))
    peak = max(peak, rss_mib())
    done = sum(1 for a in agents if a.state is AgentState.done)
    if top.state is not AgentState.done or done != len(agents):
        raise SystemExit(f"fan-out failed: top {top.state.value}, {done} of {len(agents)} agents done")
    growth = peak - baseline
    report_value("fanout, agents", len(agents), "agents")
    report_value("fanout, model calls", model.calls, "calls")
    report_value("fanout, completion", elapsed * 1000, "ms")
    report_value("fanout, peak alive agents", peak_alive, "agents")
    report_value("fanout, RSS peak", max(peak, peak_rss_mib()), "MiB")
    report_value("fanout, RSS growth", growth, "MiB")
    report_value("fanout, RSS per agent", growth / len(agents) * 1024, "KiB")
    report("fanout, event latency", latencies)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--children", type=int, default=20, help="children of the top agent (default 20)")
    parser.add_argument("--grandchildren", type=int, default=25, help="children of each child (default 25)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="model latency per call (default 50)")
    parser.add_argument("--quick", action="store_true", help="a 1 → 3 → 3 tree, to check the benchmark runs")
    args = parser.parse_args()
    n, m = (3, 3) if args.quick else (args.children, args.grandchildren)
    anyio.run(run, n, m, args.latency_ms / 1000)
