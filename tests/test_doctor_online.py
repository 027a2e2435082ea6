"""``dispatch doctor --online``: each configured key is tried with one one-token call through the
same path agents use, and what went wrong is said as a user reads it (the key refused, the endpoint
that could not be reached), with the exit code saying whether every key works."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml

from tests.fakes.scripted_llm import Fail, Reply, ScriptedLLM
from tests.models_helpers import key, model

PROMPT = "Answer with one word"


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _doctor(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatch.hub.cli", "doctor", "--root", str(root), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_doctor_online_tries_each_key_and_says_which_fail_and_why(
    two: tuple[ScriptedLLM, ScriptedLLM], tmp_path: Path
) -> None:
    good, refusing = two
    good.script(PROMPT, [Reply(text="ok")])
    refusing.script(PROMPT, [Fail(401, {"error": {"message": "Incorrect API key provided: sk-bad"}})])
    unreachable = _closed_port_url()
    gone = {"name": "gone-key", "provider": "openai", "key": "sk-gone", "base_url": unreachable}
    root = tmp_path / "project"
    (root / ".dispatch").mkdir(parents=True)
    config = {
        "models": {
            "keys": [
                key("good-key", "openai", good, {"fast": model("light")}),
                key("bad-key", "openai", refusing, {"big": model("heavy")}),
                {**gone, "models": {"far": model("light")}},
            ]
        }
    }
    (root / ".dispatch" / "config.yaml").write_text(yaml.safe_dump(config))

    offline = _doctor(root)
    assert "Keys tried online" not in offline.stdout and good.requests == []

    done = _doctor(root, "--online")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "openai/fast answered in" in done.stdout
    assert "the endpoint refused the API key" in done.stdout and "Incorrect API key provided" in done.stdout
    far = next(line for line in done.stdout.splitlines() if "openai/far" in line)
    assert far.split()[0] == "failed" and f"{unreachable}" in far and "could not be reached" in far
    assert "Error:" not in done.stdout and "Traceback" not in done.stdout + done.stderr
    assert [r.body.get("max_tokens") for r in good.requests] == [1]
    assert [r.model for r in refusing.requests] == ["big"]
