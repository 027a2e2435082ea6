"""`dispatch run` as a user runs it: a real subprocess, real litellm, the scripted model server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.agent_helpers import call
from tests.fakes.scripted_llm import Reply, ScriptedLLM

DISPATCH = [sys.executable, "-m", "dispatch.hub.cli"]


def dispatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DISPATCH, *args], capture_output=True, text=True, timeout=120, env=env or dict(os.environ), check=False
    )


def test_run_json_reports_the_tree_and_usage(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script(
        "[cli-top]",
        [
            Reply(tool_calls=[call("summon", task="[cli-child] write notes.md", scope=["notes.md"], wait=True)]),
            Reply(text="Top report: the child wrote notes.md", usage=(100, 10)),
        ],
    )
    scripted_llm.script(
        "[cli-child]",
        [Reply(tool_calls=[call("write_file", path="notes.md", content="# Notes\n")]), Reply(text="notes written")],
    )

    done = dispatch("run", "[cli-top] make notes", "--model", "openai/scripted", "--root", str(tmp_path), "--json")

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["state"] == "done"
    assert out["report"] == "Top report: the child wrote notes.md"
    states = {a["name"]: a["state"] for a in out["agents"]}
    assert list(states.values()) == ["done", "done"]
    child = next(a for a in out["agents"] if a["parent_id"] == out["id"])
    assert child["report"] == "notes written" and child["scope"] == ["notes.md"]
    assert out["usage"]["calls"] == 4 and out["usage"]["prompt_tokens"] >= 100
    assert (tmp_path / "notes.md").read_text() == "# Notes\n"


def test_run_prints_the_report_and_the_activity(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script(
        "[cli-plain]", [Reply(tool_calls=[call("list_dir", path=".")]), Reply(text="Nothing to do here.")]
    )

    done = dispatch("run", "[cli-plain] look around", "--model", "openai/scripted", "--root", str(tmp_path))

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Nothing to do here."
    assert "→ list_dir" in done.stderr and "done" in done.stderr


def test_unknown_model_is_a_clear_error_without_traceback(tmp_path: Path) -> None:
    done = dispatch("run", "anything", "--model", "no-such-model-xyz", "--root", str(tmp_path))

    assert done.returncode != 0
    assert "unknown model 'no-such-model-xyz'" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_unreachable_endpoint_is_a_clear_error_without_traceback(tmp_path: Path) -> None:
    env = dict(os.environ, OPENAI_BASE_URL="http://127.0.0.1:9/v1", OPENAI_API_BASE="http://127.0.0.1:9/v1")
    done = dispatch("run", "anything", "--model", "openai/gpt-4o-mini", "--root", str(tmp_path), env=env)

    assert done.returncode == 1
    assert "http://127.0.0.1:9/v1" in done.stderr and "could not be reached" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout and "litellm." not in done.stderr


def test_root_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    done = dispatch("run", "anything", "--model", "openai/x", "--root", str(tmp_path / "missing"))

    assert done.returncode == 2
    assert "not a directory" in done.stderr
