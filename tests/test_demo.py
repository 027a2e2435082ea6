"""``dispatch demo``: with an empty home and no key anywhere, a scripted model plays a short
multi-agent session on a sample project that a newcomer can watch in the web UI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from dispatch.hub.llm.defaults import KEY_VARIABLES
from tests.api_helpers import DISPATCH


def _until(check: Any, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("the demo did not get there in time")


def test_the_demo_runs_a_tree_to_done_with_no_key_and_an_empty_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES.values() and k != "DISPATCH_HOME"}
    env["HOME"] = str(home)
    project = tmp_path / "sample"
    demo = subprocess.Popen(
        [*DISPATCH, "demo", "--port", "0", "--root", str(project)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        url = demo.stdout.readline().strip()
        found = re.match(r"(http://[^/]+)/\?token=(.+)", url)
        assert found, url
        client = httpx.Client(base_url=found[1], headers={"Authorization": f"Bearer {found[2]}"}, timeout=10)

        def done() -> list[dict[str, Any]] | None:
            agents = client.get("/api/agents").json()
            return agents if len(agents) >= 3 and all(a["state"] == "done" for a in agents) else None

        agents = _until(done)
        approvals = client.get("/api/approvals", params={"state": "approved"}).json()
        top = next(a for a in agents if a["parent_id"] is None)
        transcript = client.get(f"/api/agents/{top['id']}").json()["transcript"]
        usage = client.get("/api/usage").json()
    finally:
        demo.send_signal(signal.SIGTERM)
        _, stderr = demo.communicate(timeout=60)

    assert demo.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert {a["name"] for a in agents} >= {"dispatch", "greeter", "tester"}
    assert (project / "greet.py").read_text().count("def greet") == 1
    assert "unittest" in (project / "test_greet.py").read_text()
    assert any("Keep the greeting friendly" in str(m.get("content")) for m in transcript), "the message was read"
    assert [a["checkpoint"] for a in approvals] == ["before_report"], "its report waited for an approval"
    assert not any(home.iterdir()), "the demo touched the user's home"
    spent = sum(a["tokens_in"] + a["tokens_out"] for a in agents)
    assert spent > 0 and usage["total"]["tokens_in"] + usage["total"]["tokens_out"] == spent, "the ledger has its calls"
    assert set(usage["by_agent"]) == {a["id"] for a in agents}
