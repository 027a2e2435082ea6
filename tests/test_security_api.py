"""The hub's API and store under hostile or unlucky conditions: a full data directory, foreign
origins, huge bodies, credentials in the environment, text that reorders what a reader sees, and
the schema pages. Each case drives a real hub (``dispatch serve`` in a subprocess, real HTTP and
WebSocket clients, the real litellm path to the scripted model) or the real function at the
boundary, and asserts what a user would check."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from dispatch.hub.api.auth import MAX_BODY_BYTES
from dispatch.hub.mounts.untrusted import mark_untrusted
from dispatch.servers.sandbox.policy import scrub_environment
from tests.agent_helpers import call
from tests.api_helpers import MODEL, ServedHub, start_hub
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM

# -- a full data directory -------------------------------------------------------------------------


@pytest.fixture
def small_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An 8 MiB tmpfs as the hub's data directory (``DISPATCH_HOME``), unmounted afterwards."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("needs root and mount(8) to make a small filesystem (a tmpfs) for the data directory")
    made = subprocess.run([mount, "-t", "tmpfs", "-o", "size=8M,mode=0700", "tmpfs", str(data)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the data directory: {made.stderr.decode().strip()}")
    monkeypatch.setenv("DISPATCH_HOME", str(data))
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def _fill(path: Path) -> None:
    """Write ``path`` until the filesystem has no room left."""
    with path.open("wb", buffering=0) as filler:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    filler.write(b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error


def _stored(data: Path) -> dict[str, Any]:
    with sqlite3.connect(data / "dispatch.db") as db:
        db.row_factory = sqlite3.Row
        return {
            "event_ids": [row[0] for row in db.execute("select id from events order by id")],
            "types": [row[0] for row in db.execute("select type from events order by id")],
            "agents": {row["id"]: dict(row) for row in db.execute("select * from agents")},
            "messages": [dict(row) for row in db.execute("select * from messages")],
            "usage": db.execute("select count(*) from usage").fetchone()[0],
        }


@pytest.mark.anyio
async def test_a_full_data_directory_is_reported_agents_wait_and_go_on_once_there_is_space(
    scripted_llm: ScriptedLLM, project: Path, small_data_dir: Path
) -> None:
    asked, filled = threading.Event(), threading.Event()

    async def while_the_disk_fills(_: RecordedRequest) -> Reply:
        asked.set()
        await asyncio.to_thread(filled.wait, 60)  # answered once the test has filled the disk
        return Reply(tool_calls=[call("list_dir", path=".")])

    look = Reply(tool_calls=[call("list_dir", path=".")])
    steps = [look, look, while_the_disk_fills, look, look, Reply(text="[disk] finished")]
    scripted_llm.script("[disk]", steps)
    served = start_hub(project, "--deadline", "5")
    filler = small_data_dir / "filler"
    try:
        async with served.client() as http, served.events(since=0) as events:
            started = await http.post("/api/agents", json={"task": "[disk] look around", "model": MODEL})
            assert started.status_code == 201, started.text
            agent = started.json()["id"]
            assert await anyio.to_thread.run_sync(asked.wait, 60)
            sent = await http.post(f"/api/agents/{agent}/messages", json={"text": "keep going", "kind": "context"})
            assert sent.status_code == 202, sent.text  # acknowledged: it must survive what follows
            lines_before = len(served.stderr().splitlines())

            _fill(filler)
            filled.set()
            warning = await events.until(lambda e: e["type"] == "store.full")
            assert warning["agent_id"] == "hub" and str(small_data_dir) in warning["data"]["error"]
            paused = await events.until(
                lambda e: e["type"] == "agent.state" and e["agent_id"] == agent and e["data"]["state"] == "waiting_disk"
            )
            assert str(small_data_dir) in paused["data"]["reason"]
            shown = (await http.get(f"/api/agents/{agent}")).json()
            assert shown["state"] == "waiting_disk" and str(small_data_dir) in shown["reason"]

            for method, path, body in (
                ("POST", f"/api/agents/{agent}/messages", {"text": "are you there?", "kind": "context"}),
                ("POST", "/api/agents", {"task": "[disk] another", "model": MODEL}),
                ("POST", "/api/chats", {}),
            ):
                refused = await http.request(method, path, json=body)
                assert refused.status_code == 507, (path, refused.status_code, refused.text)
                detail = refused.json()["detail"]
                assert str(small_data_dir) in detail and "full" in detail and "\n" not in detail, detail
                assert "Error" not in detail  # no exception class name
            await anyio.sleep(2)  # the journal keeps trying meanwhile; the agent keeps waiting
            assert (await http.get(f"/api/agents/{agent}")).json()["state"] == "waiting_disk"
            quiet = served.stderr().splitlines()[lines_before:]
            assert len(quiet) <= 3, "\n".join(quiet)  # one line saying hub.log cannot be written, not a flood
            assert all("Traceback" not in line for line in quiet)

            filler.unlink()
            await events.until(lambda e: e["type"] == "store.writable", timeout_s=30)
            await events.until(
                lambda e: e["type"] == "agent.state" and e["agent_id"] == agent and e["data"]["state"] == "done"
            )
            assert (await http.get(f"/api/agents/{agent}")).json()["report"] == "[disk] finished"
    finally:
        filled.set()
        code = served.stop()
    assert code == 0, served.stderr()

    stored = _stored(small_data_dir)
    assert stored["event_ids"] == list(range(1, len(stored["event_ids"]) + 1))  # no event lost, none out of order
    assert "store.full" in stored["types"] and "store.writable" in stored["types"]
    row = stored["agents"][agent]
    assert row["state"] == "done" and row["report"] == "[disk] finished" and row["steps"] == len(steps)
    [message] = [m for m in stored["messages"] if m["text"] == "keep going"]
    assert message["delivered_step"] is not None
    assert stored["usage"] == len(steps)  # every model call's usage, the one made while full included


# -- the guard: origins, body size, the schema pages -------------------------------------------------


@pytest.mark.anyio
async def test_a_page_on_another_local_port_is_refused_while_the_hubs_own_page_works(served: ServedHub) -> None:
    port = served.base_url.rsplit(":", 1)[1]
    async with served.client() as http:
        for foreign in ("http://localhost:1", f"http://127.0.0.1:{int(port) + 1}", f"https://127.0.0.1:{port}"):
            refused = await http.get("/api/agents", headers={"Origin": foreign})
            assert refused.status_code == 403, foreign
            assert "origin" in refused.json()["detail"]
        for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
            assert (await http.get("/api/agents", headers={"Origin": own})).status_code == 200, own
    with pytest.raises(InvalidStatus) as refused_ws:
        async with connect(
            f"{served.ws_url}?token={served.token}", additional_headers={"Origin": "http://localhost:1"}
        ):
            pass
    assert refused_ws.value.response.status_code == 403


@pytest.mark.anyio
async def test_a_body_over_the_documented_limit_is_refused_with_413(served: ServedHub) -> None:
    huge = "x" * (MAX_BODY_BYTES + 1)
    async with served.client() as http:
        sized = await http.post("/api/chats", json={"title": huge})
        assert sized.status_code == 413, sized.text
        assert "1024 KiB" in sized.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            yield b'{"title": "'
            for _ in range(60):
                yield b"y" * ((1 << 20) // 32)
            yield b'"}'

        streamed = await http.post("/api/chats", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413, streamed.text
        fits = await http.post("/api/chats", json={"title": "z" * (MAX_BODY_BYTES // 2)})
        assert fits.status_code != 413
        assert (await http.get("/api/chats")).status_code == 200  # the hub is fine
    assert "1 MiB" in (Path(__file__).parents[1] / "README.md").read_text()


@pytest.mark.anyio
async def test_the_schema_and_its_page_need_the_token(served: ServedHub) -> None:
    async with httpx.AsyncClient(base_url=served.base_url) as anonymous:
        for path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"):
            assert (await anonymous.get(path)).status_code == 401, path
        assert (await anonymous.get("/api/health")).status_code == 200
    async with served.client() as http:
        assert "/api/agents" in (await http.get("/openapi.json")).json()["paths"]
        page = await http.get("/docs")
        assert page.status_code == 200 and "/openapi.json?token=" in page.text


# -- credentials in the environment, text that reads out of order ---------------------------------


def test_the_scrubber_drops_personal_tokens_jwts_and_urls_with_a_user_part() -> None:
    env = {
        "SENTRY_DSN": "https://0123456789abcdef@o1.ingest.sentry.io/1",
        "PIP_INDEX_URL": "https://__token__@pypi.example/simple",
        "UPSTREAM": "git+https://deploy:hunter2@git.example/repo.git",
        "GH_PAT": "ghp_xxx",
        "GITLAB_PAT": "glpat-xxx",
        "CI_JOB_JWT": "eyJ...",
        "CI_JOB_JWT_V2": "eyJ...",
        "DB_PASS": "hunter2",
        "PATH": "/usr/bin:/bin",
        "PWD": "/work",
        "PATHEXT": ".py",
        "HOMEPAGE": "https://example.com/~me",
        "MAILTO": "mailto:me@example.com",
        "DOCS": "https://example.com/find?who=a@b",
    }
    assert scrub_environment(env) == {
        "PATH": "/usr/bin:/bin",
        "PWD": "/work",
        "PATHEXT": ".py",
        "HOMEPAGE": "https://example.com/~me",
        "MAILTO": "mailto:me@example.com",
        "DOCS": "https://example.com/find?who=a@b",
    }


def test_bidi_controls_do_not_survive_the_untrusted_data_filter() -> None:
    controls = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    page = f"access = 'user'{controls} # \u202eadmin only\u2066 ok\nשלום عربي"
    marked = mark_untrusted(page, "web.fetch")
    assert not any(c in marked for c in controls)
    assert "access = 'user' # admin only ok\nשלום عربي" in marked  # the text itself is kept
