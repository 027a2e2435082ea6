"""Ctrl-C in the terminal (SIGINT to the whole foreground process group, the model worker
included) stops a run quietly: no traceback from any process, and ``--json`` still prints what it has."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.api_helpers import DISPATCH
from tests.fakes.scripted_llm import Reply, ScriptedLLM


def test_ctrl_c_stops_a_run_quietly_and_json_still_prints(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script("[ctrl-c]", [Reply(text="too late", delay_s=30.0)])
    run = subprocess.Popen(
        [
            *DISPATCH,
            "run",
            "[ctrl-c] think for a while",
            "--model",
            "openai/scripted",
            "--json",
            "--root",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    deadline = time.monotonic() + 60
    while not scripted_llm.requests_for("[ctrl-c]") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scripted_llm.requests_for("[ctrl-c]"), "the model was never asked"

    os.killpg(run.pid, signal.SIGINT)
    stdout, stderr = run.communicate(timeout=60)
    scripted_llm.clear_failures()  # the reply it was waiting for is never read

    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    printed = json.loads(stdout)
    assert printed["agents"] and printed["agents"][0]["state"] in ("cancelled", "interrupted"), printed
