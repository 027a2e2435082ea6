"""``dispatch logs`` and ``dispatch resume`` as a user runs them: real subprocesses on a data
directory a hub (in this process) wrote, the scripted model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from dispatch.hub.api.auth import load_or_create_token
from dispatch.hub.llm.scripted import RecordedRequest, Script, ScriptedModel
from dispatch.hub.service.hub import Hub
from dispatch.hub.service.lifecycle import LOG_FILE, HubLock
from tests.agent_helpers import call, until
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.hub_helpers import MODEL, dirs

pytestmark = pytest.mark.anyio
DISPATCH = [sys.executable, "-m", "dispatch.hub.cli"]


def dispatch(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DISPATCH, *args], capture_output=True, text=True, timeout=timeout_s, env=dict(os.environ), check=False
    )


def _explode(request: RecordedRequest) -> Reply:
    """The model client failing with an unexpected error (a bug, not a Dispatch error)."""
    raise RuntimeError("the model client broke")


async def test_logs_show_activity_and_errors_with_context_and_keep_tracebacks_in_the_log_file(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    root, data = dirs(tmp_path)
    scripted_llm.script(
        "[log-top]",
        [Reply(tool_calls=[call("summon", task="[log-child] read it", name="reader", wait=True)]), Reply(text="ok")],
    )
    scripted_llm.script(
        "[log-child]", [Reply(tool_calls=[call("read_file", path="missing/notes.md")]), Reply(text="no notes")]
    )
    async with Hub.open(root, data) as hub:
        top = await hub.start("[log-top] delegate", model=MODEL)
        await hub.wait_finished(top.id)
        child = next(v for v in (await hub.agents()) if v.parent_id == top.id)
    with ScriptedModel([Script(match="[log-broken]", steps=[_explode])]) as exploding:
        async with Hub.open(root, data, model=exploding) as hub:
            broken = await hub.start("[log-broken] anything", model=MODEL)
            await hub.wait_finished(broken.id)

    everything = dispatch("logs", "--data-dir", str(data))
    only_child = dispatch("logs", "reader", "--data-dir", str(data))
    unknown = dispatch("logs", "nobody", "--data-dir", str(data))

    assert everything.returncode == 0, everything.stderr
    out = everything.stdout
    assert f"dispatch[{top.id}] spawned by the user: [log-top] delegate" in out
    assert f"reader[{child.id}] → read_file" in out
    assert f"reader[{child.id}] ✗ tool read_file failed:" in out
    assert f"chain: dispatch[{top.id}] > reader[{child.id}]" in out
    assert 'arguments: {"path": "missing/notes.md"}' in out
    assert f"dispatch[{broken.id}] ✗ failed (RuntimeError: the model client broke)" in out
    assert "Traceback" not in out + everything.stderr
    log_file = (data / LOG_FILE).read_text()
    assert "Traceback" in log_file and "RuntimeError: the model client broke" in log_file
    assert "tool read_file failed for agent" in log_file and "missing/notes.md" in log_file
    assert only_child.returncode == 0
    assert only_child.stdout.strip() and all(f"[{child.id}]" in line.split(" ")[2] for line in _lines(only_child))
    assert unknown.returncode == 2 and "no agent with the id or name 'nobody'" in unknown.stderr


def _lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stdout.splitlines() if line and not line.startswith("    ")]


async def test_logs_follow_prints_new_events_as_they_are_stored(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    scripted_llm.script("[follow-one]", [Reply(text="first")])
    scripted_llm.script("[follow-two]", [Reply(text="second")])
    async with Hub.open(root, data) as hub:
        await hub.wait_finished((await hub.start("[follow-one] go", model=MODEL)).id)
    follower = subprocess.Popen(  # noqa: ASYNC220 - a user's terminal, running beside the hub
        [*DISPATCH, "logs", "-f", "--data-dir", str(data)], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    lines: list[str] = []
    assert follower.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(follower.stdout or []), daemon=True)
    reader.start()
    try:
        await until(lambda: any("report: first" in line for line in lines), timeout_s=30)
        async with Hub.open(root, data) as hub:
            await hub.wait_finished((await hub.start("[follow-two] go", model=MODEL)).id)
        await until(lambda: any("report: second" in line for line in lines), timeout_s=30)
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    assert any("spawned by the user: [follow-two] go" in line for line in lines)


async def test_resume_runs_an_interrupted_agent_here_when_no_hub_runs(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    root, data = dirs(tmp_path)
    scripted_llm.script(
        "[resume-cli]",
        [
            Reply(tool_calls=[call("write_file", path="step1.txt", content="1")]),
            Reply(text="lost", delay_s=3),
            Reply(text="resumed and done"),
        ],
    )
    async with Hub.open(root, data) as hub:
        agent = await hub.start("[resume-cli] two steps", model=MODEL)
        await until(lambda: len(scripted_llm.requests_for("[resume-cli]")) == 2)
    # the hub stopped mid-step: interrupted after step 1

    done = dispatch("resume", agent.id, "--data-dir", str(data))
    again = dispatch("resume", agent.id, "--data-dir", str(data))

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "resumed and done"
    assert f"[{agent.id}] resumed from its last step" in done.stderr
    assert again.returncode == 2 and "is done; only an interrupted agent, or one failed by a setup" in again.stderr
    third = scripted_llm.requests_for("[resume-cli]")[2].messages
    assert third == scripted_llm.requests_for("[resume-cli]")[1].messages


class _FakeApi(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        _FakeApi.seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
        body = json.dumps({"id": "a-12345678", "name": "top", "state": "pending"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_resume_goes_through_the_running_hub_when_there_is_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    token = load_or_create_token(data)
    server = HTTPServer(("127.0.0.1", 0), _FakeApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    lock = HubLock.acquire(data, f"http://127.0.0.1:{server.server_address[1]}")
    try:
        done = dispatch("resume", "a-12345678", "--data-dir", str(data))
    finally:
        lock.release()
        server.shutdown()
    assert done.returncode == 0, done.stderr
    assert "resumed a-12345678 (top) in the hub at http://127.0.0.1:" in done.stdout
    assert _FakeApi.seen == [{"path": "/api/agents/a-12345678/resume", "authorization": f"Bearer {token}"}]
