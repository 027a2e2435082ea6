"""`dispatch run --jsonl` as CI runs it: a real subprocess whose stdout is read line by line while
the run goes on, the task piped in on stdin (`-`), the scripted model server behind real litellm."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.agent_helpers import call
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM

DISPATCH = [sys.executable, "-m", "dispatch.hub.cli"]


def _start(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*DISPATCH, "run", *args, "--model", "openai/scripted", "--root", str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def test_jsonl_lines_arrive_while_the_run_goes_on(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    released = threading.Event()

    async def held(_: RecordedRequest) -> Reply:
        while not released.is_set():  # the run stays in its second model call until the test has looked
            await asyncio.sleep(0.05)
        return Reply(text="Looked around: nothing to do.")

    scripted_llm.script("[jsonl]", [Reply(tool_calls=[call("list_dir", path=".")]), held])
    run = _start(tmp_path, "-", "--jsonl")
    assert run.stdin is not None and run.stdout is not None
    run.stdin.write("[jsonl] look around\n")
    run.stdin.close()
    timer = threading.Timer(120, run.kill)  # a hung run fails the test instead of hanging it
    timer.start()
    try:
        early: list[dict[str, Any]] = []
        for raw in run.stdout:
            early.append(json.loads(raw))  # each line is one JSON object on its own
            if early[-1]["type"] == "tool.result":
                break
        still_running = run.poll() is None
        released.set()
        rest = [json.loads(raw) for raw in run.stdout]
        code = run.wait(timeout=60)
    finally:
        timer.cancel()
        released.set()

    assert still_running, "the tool's result line came only after the run ended"
    assert [e["type"] for e in early[:1]] == ["agent.spawned"]
    assert early[0]["data"]["task"] == "[jsonl] look around"  # read from stdin
    assert early[-1]["data"]["name"] == "list_dir" and {"seq", "at", "agent_id"} <= set(early[-1])
    assert not any(e["type"] == "result" for e in early)
    result = rest[-1]
    assert result["type"] == "result" and result["state"] == "done", run.stderr and run.stderr.read()
    assert result["report"] == "Looked around: nothing to do."
    assert result["usage"]["calls"] == 2 and [a["state"] for a in result["agents"]] == ["done"]
    top_states = [e["data"]["state"] for e in rest[:-1] if e["type"] == "agent.state" and e["agent_id"] == result["id"]]
    assert top_states[-1] == "done"  # the top agent's last state comes before the result line
    assert code == 0


def test_a_failed_jsonl_run_keeps_its_exit_code(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script("[jsonl-cap]", [Reply(tool_calls=[call("list_dir", path=".")])])

    run = _start(tmp_path, "[jsonl-cap] look", "--jsonl", "--max-steps", "1")
    out, err = run.communicate(timeout=120)

    lines = [json.loads(raw) for raw in out.splitlines()]
    assert lines[-1]["type"] == "result" and lines[-1]["state"] == "failed", err
    assert "its own max_steps is 1" in lines[-1]["error"]
    assert run.returncode == 1


def test_a_dash_task_with_nothing_on_stdin_is_one_clear_error(tmp_path: Path) -> None:
    run = _start(tmp_path, "-", "--jsonl")
    out, err = run.communicate("", timeout=60)
    both = _start(tmp_path, "anything", "--json", "--jsonl")
    both_out, both_err = both.communicate("", timeout=60)

    assert run.returncode == 2 and out == ""
    assert err.strip() == "error: the task is `-` but stdin gave no text (pipe the task in)"
    assert both.returncode == 2 and both_out == ""
    assert both_err.strip() == "error: --json and --jsonl: give one of them"
