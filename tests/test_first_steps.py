"""What a newcomer hits first: the version, a port already taken, the hub's address opened
without its token, what the terminal view shows of a tool's result."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import httpx

from dispatch.hub.cli.live_view import describe
from dispatch.hub.events import Event, ToolReturned
from tests.api_helpers import DISPATCH, ServedHub


def _dispatch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DISPATCH, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


def test_version_prints_the_installed_version() -> None:
    done = _dispatch("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"dispatch {version('dispatch-harness')}"


def test_a_port_in_use_is_a_usage_error_that_suggests_port_0(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = _dispatch("serve", "--port", str(port), "--root", str(tmp_path))

    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], done.stderr
    assert "--port 0" in lines[0]
    assert "Traceback" not in done.stderr


def test_the_hub_opened_without_its_token_says_how_to_get_in(served: ServedHub) -> None:
    page = httpx.get(f"{served.base_url}/", headers={"Accept": "text/html,application/xhtml+xml"})
    api = httpx.get(f"{served.base_url}/api/agents")

    assert page.status_code == 401
    assert page.headers["content-type"].startswith("text/html")
    assert "needs its token" in page.text and "dispatch serve" in page.text
    assert api.status_code == 401 and api.json()["detail"].startswith("a valid token is required"), (
        "API clients get JSON"
    )


def test_python_m_dispatch_hub_cli_is_the_dispatch_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dispatch.hub.cli", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and "Usage: " in done.stdout


def test_the_terminal_view_shows_a_tool_results_first_meaningful_line() -> None:
    def shown(text: str) -> str | None:
        returned = ToolReturned(call_id="c1", name="wait", is_error=False, text=text, seconds=0.1)
        return describe(Event(seq=1, at=0.0, agent_id="a-1", data=returned))

    waited = json.dumps({"finished": [], "still_running": [{"id": "a-2", "name": "coder"}]}, indent=2)
    assert shown(waited) == 'a-1 ← wait ok: finished: [], still_running: [{"id": "a-2", "name": "coder"}]'
    assert shown("\n}\n  wrote hello.py (12 bytes)\n") == "a-1 ← wait ok: wrote hello.py (12 bytes)"


def _children(pid: int) -> list[str]:
    """The command lines of the processes whose parent is ``pid``."""
    found: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(command)
    return found


def test_the_model_worker_starts_with_the_hub_not_at_the_first_call(served: ServedHub) -> None:
    deadline = time.monotonic() + 60
    while not any("dispatch.hub.llm.model_worker" in c for c in _children(served.process.pid)):
        assert time.monotonic() < deadline, "no model worker was started"
        time.sleep(0.1)
    assert httpx.get(f"{served.base_url}/api/agents", headers=served.auth).json() == [], "nothing asked a model"


def test_help_text_flows_without_breaks_mid_sentence() -> None:
    done = subprocess.run(
        [*DISPATCH, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "240", "TERM": "dumb"},
    )
    assert done.returncode == 0
    rows = [line.strip(" │") for line in done.stdout.splitlines()]
    run_row = next(r for r in rows if r.startswith("run "))
    assert "and print its report. The run is journaled in the data directory" in run_row, run_row
