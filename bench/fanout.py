"""Fan-out: a tree of 1 → N → M agents alive at once in a real ``dispatch serve``, against a model
(:mod:`bench.fanout_model`, its own process) that takes 50 ms per call, measured through the API.

The top agent summons N children at once; each summons M leaves; every leaf's first model call is
held until the whole tree exists (so all are alive at once), then it makes one tool call and
reports. Prints:

- fanout, completion: from ``POST /api/agents`` until the top agent is done;
- fanout, peak alive agents: the most agents alive (pending, running or waiting) at once;
- fanout, hub RSS start / peak / per agent: the hub process's resident memory before the run, its
  peak (``VmHWM``), and the growth divided by the number of agents;
- fanout, model worker RSS peak: the peaks of the hub's model worker processes, summed (litellm lives there);
- fanout, event latency: from an agent's state change (the event's timestamp, taken as the state
  is set) to a WebSocket client of ``/api/events`` receiving it, over every ``agent.state`` event;
- fanout, GET /api/agents: its round trip, polled every 100 ms during the run.

``python -m bench.fanout [--children N] [--grandchildren M] [--latency-ms L] [--quick] [--profile FILE]``
"""

from __future__ import annotations

from pathlib import Path

import anyio

from bench._common import report, report_value
from bench._hub_load import run_load, tree_parser


async def main(children: int, grandchildren: int, latency_ms: float, profile: Path | None) -> None:
    result = await run_load(children, grandchildren, latency_ms, rounds=1, profile=profile)
    report_value("fanout, agents", result.agents, "agents")
    report_value("fanout, model calls", result.model_calls, "calls")
    report_value("fanout, completion", result.completion_s * 1000, "ms")
    report_value("fanout, peak alive agents", result.peak_alive, "agents")
    report_value("fanout, hub RSS start", result.rss_start_mib, "MiB")
    report_value("fanout, hub RSS peak", result.rss_peak_mib, "MiB")
    growth = result.rss_peak_mib - result.rss_start_mib
    report_value("fanout, hub RSS per agent", growth / result.agents * 1024, "KiB")
    report_value("fanout, model worker RSS peak", result.worker_rss_peak_mib, "MiB")
    report("fanout, event latency", result.event_latencies)
    report("fanout, GET /api/agents", result.list_latencies)


if __name__ == "__main__":
    parser = tree_parser(__doc__)
    parser.add_argument("--latency-ms", type=float, default=50.0, help="model latency per call (default 50)")
    parser.add_argument("--profile", type=Path, help="run the hub under cProfile and write its stats to this file")
    args = parser.parse_args()
    n, m = (3, 3) if args.quick else (args.children, args.grandchildren)
    anyio.run(main, n, m, args.latency_ms, args.profile)
