"""The config's hooks as `dispatch run` shows them, a real subprocess with real hook scripts: a
call a hook blocked is one line on stderr as it happens (stdout stays the JSON), on its
``tool.result`` event, and a hook's ``{"continue": false}`` ends the run cancelled with its reason.
`--json` carries every agent as the API's AgentView has it, its caps too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.agent_helpers import call
from tests.fakes.scripted_llm import Reply, ScriptedLLM

DISPATCH = [sys.executable, "-m", "dispatch.hub.cli"]

GUARD = """#!/bin/sh
# blocks listing the project; stops the agent at any write
input=$(cat)
case "$input" in
  *'"tool_name": "list_dir"'*) echo 'listing is off: read the README instead' >&2; exit 2 ;;
  *'"tool_name": "write_file"'*) echo '{"continue": false, "stopReason": "writes need a ticket"}' ;;
esac
"""


def _configure(root: Path) -> None:
    """A PreToolUse hook (a script in the project) on every tool."""
    (root / ".dispatch").mkdir()
    script = root / ".dispatch" / "guard.sh"
    script.write_text(GUARD)
    script.chmod(0o755)
    hooks = {"PreToolUse": [{"hooks": [{"type": "command", "command": "./.dispatch/guard.sh"}]}]}
    (root / ".dispatch" / "config.yaml").write_text(json.dumps({"hooks": hooks}))


def _run(root: Path, task: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DISPATCH, "run", task, "--model", "openai/scripted", "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )


def _blocked_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "blocked by a PreToolUse hook" in line]


def test_a_blocked_call_is_one_stderr_line_and_on_its_tool_result_event(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    _configure(tmp_path)
    scripted_llm.script("[hook-jsonl]", [Reply(tool_calls=[call("list_dir", path=".")]), Reply(text="gave up")])

    done = _run(tmp_path, "[hook-jsonl] look around", "--jsonl")

    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]  # stdout: JSON lines only
    result = next(e for e in events if e["type"] == "tool.result")
    assert result["data"]["blocked"] == "listing is off: read the README instead"
    assert result["data"]["is_error"] is True
    assert result["data"]["text"].startswith("Error: not run: a PreToolUse hook blocked list_dir:")
    top = events[-1]["id"]
    (agent,) = events[-1]["agents"]  # the result line's agents are the API's views too
    assert (agent["budget_usd"], agent["max_tokens"], agent["max_steps"]) == (None, None, None)
    assert _blocked_lines(done.stderr) == [
        f"{top} ← list_dir blocked by a PreToolUse hook (not run): listing is off: read the README instead"
    ]


def test_continue_false_stops_the_run_cancelled_with_its_reason(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    _configure(tmp_path)
    scripted_llm.script(
        "[hook-stop]",
        [
            Reply(tool_calls=[call("list_dir", path=".")]),
            Reply(tool_calls=[call("write_file", path="notes.md", content="# Notes\n")]),
        ],
    )

    done = _run(tmp_path, "[hook-stop] write notes", "--json", "--max-steps", "7", "--budget", "2.5")

    assert done.returncode == 130, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)  # stdout is the JSON alone, the blocked line on stderr
    assert out["state"] == "cancelled"
    assert out["reason"] == "stopped by a PreToolUse hook: writes need a ticket"
    assert not (tmp_path / "notes.md").exists()
    assert len(scripted_llm.requests_for("[hook-stop]")) == 2, "no model call after the stop"
    assert len(_blocked_lines(done.stderr)) == 1
    (top,) = out["agents"]
    assert (top["budget_usd"], top["max_tokens"], top["max_steps"]) == (2.5, None, 7)
    assert top["state"] == "cancelled" and top["reason"] == out["reason"] and top["steps"] == 2
    assert top["usage"]["calls"] == 2 and top["compactions"] == 0 and top["scope"] == ["."]
    # the hook's transcript, in the data directory: the answer that made the stopped call last
    lines = (Path(os.environ["DISPATCH_HOME"]) / "transcripts" / f"{out['id']}.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["tool_calls"][0]["function"]["name"] == "write_file"
