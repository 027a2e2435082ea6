"""What a newcomer hits first: the version, a port already taken, the hub's address opened
without its token."""

from __future__ import annotations

import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import httpx

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
