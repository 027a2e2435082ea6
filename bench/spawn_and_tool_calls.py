"""Spawn and tool-call costs of the agent primitive, in-process versus stdio.

Prints, for each figure, the median, 90th and 99th percentile over N samples:
- spawn: from ``AgentTree.start`` to the agent's first model request, with every mount connected
  and its tools listed (in-process mounts versus fs and shell as stdio subprocesses);
- tool call: one ``read_file`` round trip through an in-process MCP session, a stdio MCP
  session, and a direct call of the tool's function with no MCP at all;
- agent step: an agent's whole way from the model's answer asking for a tool to its
  next model request with the result in its transcript (its mounts, the hub's checks, the step's
  events and bookkeeping), in-process mounts: for ``read_file``, and for ``check_messages`` with no
  message waiting, a tool that does next to nothing (so this one is the harness's overhead).

``python -m bench.spawn_and_tool_calls [--samples N] [--quick]``
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from bench._common import report
from dispatch.hub.agents.spec import AgentSpec
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.ids import new_id
from dispatch.hub.llm.scripted import Reply, Script, ScriptedModel, Step, ToolCall
from dispatch.hub.llm.types import JsonDict
from dispatch.hub.policy.grants import Grants
from dispatch.servers.fs import server as fs
from dispatch.servers.fs.scope import FsScope


def _scripted_steps(tool: str, arguments: JsonDict, rounds: int) -> ScriptedModel:
    """The model asking for ``tool`` ``rounds`` times, then ending the agent. The usage is given, so
    the model does not count the transcript's tokens: its own work stays out of the figures."""
    steps: list[Step] = [Reply(tool_calls=[ToolCall(tool, arguments)], usage=(0, 0)) for _ in range(rounds)]
    return ScriptedModel([Script(match="[steps]", steps=[*steps, Reply(text="done")])])


async def agent_step_times(root: Path, samples: int, tool: str, arguments: JsonDict) -> list[float]:
    model = _scripted_steps(tool, arguments, samples + 1)
    with model:
        async with AgentTree(root, model) as tree:
            spec = AgentSpec(id=new_id(), name="bench", task="[steps] read", model="bench", grants=Grants.everything())
            await tree.start(spec).finished.wait()
    asked = model.requests
    ways = [after.started_at - (before.finished_at or after.started_at) for before, after in itertools.pairwise(asked)]
    return ways[1:]  # the first opened the session


async def spawn_times(root: Path, samples: int, isolated: bool) -> list[float]:
    """From ``AgentTree.start`` to the agent's first model request (the scripted model's record)."""
    tasks = [f"[spawn {index}]" for index in range(samples)]
    model = ScriptedModel([Script(match=task, steps=[Reply(text="done")]) for task in tasks])
    times: list[float] = []
    with model:
        async with AgentTree(root, model) as tree:
            for task in tasks:
                spec = AgentSpec(
                    id=new_id(), name="bench", task=task, model="bench", grants=Grants.everything(), isolated=isolated
                )
                started = time.monotonic()  # the clock of the model's records
                await tree.start(spec).finished.wait()
                times.append(model.requests_for(task)[0].started_at - started)
    return times


async def timed_calls(call: Callable[[], Awaitable[object]], samples: int) -> list[float]:
    await call()  # warm-up
    times: list[float] = []
    for _ in range(samples):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return times


async def tool_call_times(root: Path, samples: int) -> dict[str, list[float]]:
    arguments = {"path": "sample.txt"}
    results: dict[str, list[float]] = {}
    async with Client(fs.build_server(root)) as client:
        await client.list_tools()
        results["tool call, in-process MCP"] = await timed_calls(
            lambda: client.call_tool("read_file", arguments), samples
        )
    params = StdioServerParameters(command=sys.executable, args=["-m", "dispatch.servers.fs", "--root", str(root)])
    async with Client(params) as client:
        await client.list_tools()
        results["tool call, stdio MCP"] = await timed_calls(lambda: client.call_tool("read_file", arguments), samples)
    tools = fs.FsTools(FsScope(root))

    async def direct() -> str:
        return await tools.read_file("sample.txt")

    results["tool call, direct function"] = await timed_calls(direct, samples)
    return results


async def main(samples: int, stdio_samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "sample.txt").write_text("hello\n" * 50)
        report("spawn, in-process mounts", await spawn_times(root, samples, isolated=False))
        report("spawn, stdio fs + shell", await spawn_times(root, stdio_samples, isolated=True))
        for name, times in (await tool_call_times(root, samples)).items():
            report(name, times)
        read = await agent_step_times(root, samples, "read_file", {"path": "sample.txt"})
        report("agent step, read_file", read)
        report("agent step, check_messages", await agent_step_times(root, samples, "check_messages", {}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200, help="samples per figure (default 200)")
    parser.add_argument("--quick", action="store_true", help="a few samples, to check the benchmark runs")
    args = parser.parse_args()
    n = 5 if args.quick else args.samples
    anyio.run(main, n, n)
