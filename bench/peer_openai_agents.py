"""The fleet's workload on a peer, openai-agents: N agents at once, each one ``read_file`` through
a stdio MCP server (one, shared by all, as openai-agents' own examples mount it) and then an
answer, against the same model as :mod:`bench.fleet` (:mod:`bench.fanout_model`).

Runs in an interpreter that has ``openai-agents`` installed, not Dispatch's (it imports nothing of
Dispatch, so the two need not share an environment); :mod:`bench.peers` starts it and reads the
one JSON line it prints: wall time, the CPU of this process and of its MCP server, and failures.
Tracing is off (Dispatch's is off unless configured) and the server's tool list is cached.

``python bench/peer_openai_agents.py --agents N --model-url URL --project DIR``
``python bench/peer_openai_agents.py --serve-fs DIR`` (the MCP server it starts)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

TASK = "agent {index}: read 1 times"  # what bench.fanout_model answers with one read_file, then "done"
INSTRUCTIONS = "Read what the task says, then answer."


def serve_fs(root: Path) -> None:
    """A stdio MCP server of one tool, ``read_file``, inside ``root``."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("fs")

    @server.tool()
    def read_file(path: str) -> str:  # pyright: ignore[reportUnusedFunction]
        """Read a text file of the project."""
        return (root / path).read_text()

    server.run("stdio")


def cpu_s() -> float:
    """This process's CPU seconds, with its children's: the reaped ones and the live ones (from /proc)."""
    own, reaped = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            live += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime + live


async def fleet(agents: int, model_url: str, project: Path) -> dict[str, Any]:
    from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
    from agents.mcp import MCPServerStdio
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    model = OpenAIChatCompletionsModel(model="bench", openai_client=AsyncOpenAI(base_url=model_url, api_key="bench"))
    params = {"command": sys.executable, "args": [__file__, "--serve-fs", str(project)]}
    async with MCPServerStdio(params=params, cache_tools_list=True, client_session_timeout_seconds=120) as fs:  # type: ignore[arg-type]
        agent = Agent(name="reader", instructions=INSTRUCTIONS, model=model, mcp_servers=[fs])

        async def run(count: int, prefix: str) -> int:
            """Run ``count`` agents at once; how many did not answer "done"."""
            tasks = (Runner.run(agent, prefix + TASK.format(index=index)) for index in range(count))
            results = await asyncio.gather(*tasks, return_exceptions=True)
            return sum(1 for r in results if isinstance(r, BaseException) or r.final_output != "done")

        await run(1, "warm ")  # out of the figures, as in bench.fleet: the first call, then eight
        await run(8, "warm ")
        cpu_before, started = cpu_s(), time.perf_counter()
        failures = await run(agents, "")
        wall, cpu = time.perf_counter() - started, cpu_s() - cpu_before
    return {"wall_s": wall, "cpu_s": cpu, "failures": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-fs", type=Path, help="serve read_file in this folder over stdio")
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--model-url", help="the OpenAI-compatible endpoint, ending in /v1")
    parser.add_argument("--project", type=Path, help="the folder that holds notes.txt")
    args = parser.parse_args()
    if args.serve_fs is not None:
        serve_fs(args.serve_fs)
        return
    if args.model_url is None or args.project is None:
        parser.error("--model-url and --project are needed to run the fleet")
    print(json.dumps(asyncio.run(fleet(args.agents, args.model_url, args.project))), flush=True)


if __name__ == "__main__":
    main()
