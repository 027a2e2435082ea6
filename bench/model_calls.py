"""Model calls: what one call costs the model worker (where litellm runs) as an agent's transcript
grows, against an OpenAI-compatible model that answers at once.

Every agent's model call goes through the hub's one model worker process
(:mod:`dispatch.hub.llm.model_worker`), so its CPU per call bounds how many calls a hub can make
in a second, whatever the model's own latency. For transcripts of ``--sizes`` messages (a system
prompt, the task, then pairs of an assistant's ``read_file`` call and its ~1.5 KB result; the
``fs`` server's tools offered), ``--calls`` calls one after another. Prints, per size:

- model call, N msgs: from the hub's request to the worker until its completion is back;
- model call, N msgs, worker CPU: the worker's user + system CPU time per call.

With ``--stream`` the calls stream, as an agent's do while someone watches (the model answers in
server-sent events, a chunk per word). With ``--thread`` the calls are one agent's, as the hub
makes them: each adds a call and its result to the transcript (from N messages on), and the worker
keeps the thread's messages between calls (the hub sends only the new ones).

``python -m bench.model_calls [--sizes 10,100,500] [--calls C] [--stream] [--thread] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from bench._common import free_port, report, report_value, stop_process, wait_healthy
from dispatch.hub.llm.model_process import ModelProcess
from dispatch.hub.llm.model_worker import CallRequest
from dispatch.hub.llm.types import Delta, JsonDict
from dispatch.hub.mounts.toolset import openai_tool
from dispatch.servers.fs import server as fs

RESULT = "".join(f"    line {n}: value = compute(inputs[{n}], factor={n % 7})  # a file line\n" for n in range(24))


def transcript(size: int) -> list[JsonDict]:
    """``size`` messages: system, task, then read_file calls and their results."""
    messages: list[JsonDict] = [
        {"role": "system", "content": "You are a careful software engineer. " * 60},
        {"role": "user", "content": "Review the modules of the project and report what to fix."},
    ]
    for n in range((size - 2) // 2):
        call = {"id": f"call-{n}", "type": "function"}
        call["function"] = {"name": "read_file", "arguments": f'{{"path": "src/module_{n}.py"}}'}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"call-{n}", "content": RESULT})
    return messages


def cpu_seconds(pid: int) -> float:
    """The user + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _grown(request: CallRequest, n: int) -> CallRequest:
    """``request`` with one more ``read_file`` call and its result (an agent's next step)."""
    call = {"id": f"step-{n}", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}
    added = [{"role": "assistant", "content": None, "tool_calls": [call]}]
    added.append({"role": "tool", "tool_call_id": f"step-{n}", "content": RESULT})
    return request.model_copy(update={"messages": [*request.messages, *added]})


async def measure(base_url: str, sizes: list[int], calls: int, stream: bool, thread: bool = False) -> None:
    with tempfile.TemporaryDirectory() as root:
        tools = [openai_tool(tool) for tool in fs.plan_server(Path(root), []).listed()]
    os.environ["DISPATCH_MODEL_HOST"] = "off"  # a worker of this process's own, none left behind
    worker = ModelProcess(workers=1)  # one worker: its CPU per call
    for size in sizes:
        request = CallRequest(
            id=0, model="openai/bench", messages=transcript(size), tools=tools, timeout_s=60.0,
            api_key="sk-bench", api_base=base_url + "/v1", stream=stream,
            thread=f"bench-{size}" if thread else None,
        )  # fmt: skip
        parts: list[Delta] = []
        sink = parts.append if stream else None
        await worker.call(request, sink)  # the worker started, litellm imported, the connection open
        pid = worker.pid
        assert pid is not None
        times: list[float] = []
        cpu_before = cpu_seconds(pid)
        for n in range(calls):
            request = _grown(request, n) if thread else request
            started = time.perf_counter()
            await worker.call(request, sink)
            times.append(time.perf_counter() - started)
        cpu_per_call_ms = (cpu_seconds(pid) - cpu_before) / calls * 1000
        streamed = (", streamed" if stream else "") + (", one thread" if thread else "")
        report(f"model call, {size} msgs{streamed}", times)
        report_value(f"model call, {size} msgs{streamed}, worker CPU", cpu_per_call_ms, "ms per call")


def main(sizes: list[int], calls: int, stream: bool = False, thread: bool = False) -> None:
    port = free_port()
    model = subprocess.Popen(
        [sys.executable, "-m", "bench.fanout_model", "--port", str(port), "--latency-ms", "0"], text=True
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url + "/stats")
        anyio.run(measure, base_url, sizes, calls, stream, thread)
    finally:
        stop_process(model)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,500", help="transcript sizes, in messages (default 10,100,500)")
    parser.add_argument("--calls", type=int, default=50, help="calls per size (default 50)")
    parser.add_argument("--quick", action="store_true", help="two sizes, a few calls, to check the benchmark runs")
    parser.add_argument("--stream", action="store_true", help="streamed calls (as while someone watches)")
    parser.add_argument("--thread", action="store_true", help="one agent's calls, its transcript growing")
    args = parser.parse_args()
    if args.quick:
        main([10, 100], 3, args.stream, args.thread)
    else:
        main([int(size) for size in args.sizes.split(",")], args.calls, args.stream, args.thread)
