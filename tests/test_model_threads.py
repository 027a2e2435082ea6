"""A thread's next model call sends the worker only what follows its last call's messages: the
per-step cost of handing the transcript to the worker stays the same as the transcript grows.
The model (the scripted HTTP server, behind real litellm) still gets every message, in order; a
call whose messages do not continue the last one's, or a worker that no longer has them, gets
them whole."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dispatch.hub.llm.model_loop import model_loop
from dispatch.hub.llm.model_process import ModelProcess
from dispatch.hub.llm.model_worker import READY_LINE, CallRequest
from dispatch.hub.llm.types import Completion
from tests.agent_helpers import MODEL
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.models_helpers import pool_pids, stop_pool

NOTE = "a line of the notes the agent read back, long enough to weigh something. " * 8


def _transcript(task: str, turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You read."}, {"role": "user", "content": task}]
    for n in range(turns):
        call = {"id": f"c{n}", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"c{n}", "content": f"{n}: {NOTE}"})
    return messages


def _as_sent(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as a provider's body has them (a ``None`` content left out)."""
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


def _read_bytes(pid: int) -> int:
    """What the process has read so far (its stdin: the requests), from /proc."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["rchar"])


async def _call(pool: ModelProcess, messages: list[dict[str, Any]], thread: str | None = "a-1") -> Completion:
    request = CallRequest.model_construct(
        id=0, model=MODEL, messages=messages, tools=[], timeout_s=30, thread=thread, stream=False
    )
    return await model_loop().run(lambda: pool.call(request))


@pytest.mark.anyio
async def test_the_next_call_of_a_thread_sends_only_what_follows_and_the_model_gets_it_all(
    scripted_llm: ScriptedLLM,
) -> None:
    scripted_llm.script("[read]", [Reply(text="one"), Reply(text="two"), Reply(text="three")])
    pool = ModelProcess(1)
    first = _transcript("[read] the notes", 100)  # about 60 KB of JSON
    size = len(json.dumps(first))

    assert (await _call(pool, first)).text == "one"
    (worker,) = await pool_pids(pool)
    grown = [*first, {"role": "assistant", "content": "read them"}, {"role": "user", "content": "and again"}]
    before = _read_bytes(worker)
    assert (await _call(pool, grown)).text == "two"
    read = _read_bytes(worker) - before

    assert read < size / 10, f"the worker read {read} bytes for a call whose transcript is {size}"
    bodies = [r.body["messages"] for r in scripted_llm.requests_for("[read]")]
    assert bodies[1] == _as_sent(grown), "the model got every message, the kept ones first"

    # the same thread, its messages changed from the start (as compaction does): sent whole
    compacted = [first[0], {"role": "user", "content": "[read] the notes (summary: read 100 times)"}, *grown[-2:]]
    before = _read_bytes(worker)
    assert (await _call(pool, compacted)).text == "three"
    assert scripted_llm.requests_for("[read]")[2].body["messages"] == _as_sent(compacted)
    assert _read_bytes(worker) - before > len(json.dumps(compacted)), "sent whole"
    await stop_pool(pool)


def test_a_worker_without_the_threads_messages_asks_for_them_whole() -> None:
    """The protocol itself: a call that names kept messages the worker does not have (it was
    restarted, or let them go) is answered with ``resend``, not made."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "dispatch.hub.llm.model_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert worker.stdin is not None and worker.stdout is not None
        assert worker.stdout.readline() == READY_LINE
        request = CallRequest(
            id=7,
            model=MODEL,
            messages=[{"role": "user", "content": "more"}],
            tools=[],
            timeout_s=5,
            thread="a-9",
            reuse=12,
        )
        worker.stdin.write(request.model_dump_json().encode() + b"\n")
        worker.stdin.flush()
        answer = json.loads(worker.stdout.readline())
        assert answer["id"] == 7 and answer["resend"] is True
        assert answer.get("completion") is None and answer.get("failed") is None
    finally:
        worker.kill()
        worker.wait()
