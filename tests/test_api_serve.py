"""The API as a user's client meets it: ``dispatch serve`` in a subprocess, real HTTP and WebSocket
clients, the real litellm path to the scripted model server. Every test's hub is stopped with
SIGTERM and must exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from dispatch.hub.cli.serve import _listen  # pyright: ignore[reportPrivateUsage]
from dispatch.hub.events import EPHEMERAL
from tests.agent_helpers import call
from tests.api_helpers import DISPATCH, MODEL, ServedHub, start_hub
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM


def _state(event: dict[str, Any], agent_id: str, state: str) -> bool:
    return event["type"] == "agent.state" and event["agent_id"] == agent_id and event["data"]["state"] == state


async def _start(http: httpx.AsyncClient, task: str) -> dict[str, Any]:
    response = await http.post("/api/agents", json={"task": task, "model": MODEL})
    assert response.status_code == 201, response.text
    return response.json()


# -- the guard over real HTTP ------------------------------------------------------------------------


async def _ws_refusal(url: str, **headers: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=headers):
            pass
    return refused.value.response.status_code


@pytest.mark.anyio
async def test_without_the_token_rest_and_websocket_get_401(served: ServedHub) -> None:
    async with httpx.AsyncClient(base_url=served.base_url) as anonymous:
        for path in ("/api/agents", "/api/chats", "/api/approvals", "/api/usage", "/"):
            response = await anonymous.get(path)
            assert response.status_code == 401, path
            assert "token" in response.json()["detail"]
        assert (await anonymous.post("/api/agents", json={"task": "x"})).status_code == 401
        assert (await anonymous.get("/api/agents", params={"token": "wrong"})).status_code == 401
        assert (await anonymous.get("/api/agents", params={"token": served.token})).status_code == 200
        assert (await anonymous.get("/api/health")).json() == {"status": "ok"}
    assert await _ws_refusal(served.ws_url) == 401
    assert await _ws_refusal(served.ws_url + "?token=wrong") == 401


@pytest.mark.anyio
async def test_foreign_origin_and_host_are_refused(served: ServedHub) -> None:
    async with served.client() as http:
        foreign = await http.get("/api/agents", headers={"Origin": "http://evil.example"})
        assert foreign.status_code == 403 and "origin" in foreign.json()["detail"]
        rebound = await http.get("/api/agents", headers={"Host": "evil.example"})
        assert rebound.status_code == 403 and "host" in rebound.json()["detail"]
        port = served.base_url.rsplit(":", 1)[1]
        assert (await http.get("/api/agents", headers={"Origin": f"http://localhost:{port}"})).status_code == 200
    query = f"?token={served.token}"
    assert await _ws_refusal(served.ws_url + query, Origin="http://evil.example") == 403


@pytest.mark.anyio
async def test_mistakes_get_a_4xx_saying_what_is_wrong(served: ServedHub) -> None:
    async with served.client() as http:
        malformed = await http.post("/api/agents", content=b"{", headers={"Content-Type": "application/json"})
        assert malformed.status_code == 422 and "not valid JSON" in malformed.json()["detail"]
        extra = await http.post("/api/chats", json={"title": "t", "colour": "red"})
        assert extra.status_code == 422 and "body.colour" in extra.json()["detail"]
        unknown = await http.post("/api/agents/no-such-agent/messages", json={"text": "hi"})
        assert unknown.status_code == 404 and "no-such-agent" in unknown.json()["detail"]
        for path in ("/api/chats/nope", "/api/artifacts/nope", "/api/threads/nope"):
            missing = await http.get(path)
            assert missing.status_code == 404 and "'nope'" in missing.json()["detail"], path
        wrong_kind = await http.post("/api/agents/whatever/messages", json={"text": "hi", "kind": "report"})
        assert wrong_kind.status_code == 422 and "body.kind" in wrong_kind.json()["detail"]
        template = await http.post("/api/agents", json={"task": "x", "template": "no-such-template"})
        assert template.status_code == 400 and "no-such-template" in template.json()["detail"]
        for odd in ('say "hi', "tabs\x00spaces", "NEAR(", "*", "-"):  # search words are words, never syntax
            assert (await http.get("/api/chats", params={"q": odd})).status_code == 200, odd
            assert (await http.get("/api/artifacts", params={"q": odd})).status_code == 200, odd


# -- messages and events ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_message_to_a_running_grandchild_is_read_at_its_next_tool_boundary(
    scripted_llm: ScriptedLLM, served: ServedHub
) -> None:
    working, release = threading.Event(), threading.Event()

    async def grandchild_works(_: RecordedRequest) -> Reply:
        working.set()
        await asyncio.to_thread(release.wait, 60)  # mid-step until the test has sent its message
        return Reply(tool_calls=[call("list_dir", path=".")])

    delegate = call("summon", task="[api-child] delegate", grants={"summon": True}, wait=True)
    scripted_llm.script("[api-top]", [Reply(tool_calls=[delegate]), Reply(text="top done")])
    summon_grandchild = call("summon", task="[api-grandchild] list the files", wait=True)
    scripted_llm.script("[api-child]", [Reply(tool_calls=[summon_grandchild]), Reply(text="child done")])
    scripted_llm.script("[api-grandchild]", [grandchild_works, Reply(text="listed, with tabs")])

    try:
        async with served.client() as http, served.events(since=0) as events:
            top = await _start(http, "[api-top] organise the work")
            spawned = await events.until(
                lambda e: e["type"] == "agent.spawned" and "[api-grandchild]" in e["data"].get("task", "")
            )
            grandchild = spawned["agent_id"]
            assert await anyio.to_thread.run_sync(working.wait, 60)

            sent = await http.post(
                f"/api/agents/{grandchild}/messages", json={"text": "indent with tabs", "kind": "correction"}
            )
            assert sent.status_code == 202, sent.text
            message_id = sent.json()["message_id"]
            release.set()

            delivered = await events.until(
                lambda e: e["type"] == "message.delivered" and e["data"].get("message_id") == message_id
            )
            assert delivered["agent_id"] == grandchild
            await events.until(lambda e: _state(e, top["id"], "done"))
            detail = (await http.get(f"/api/agents/{grandchild}")).json()
    finally:
        release.set()

    transcript = detail["transcript"]
    tool_at = next(i for i, m in enumerate(transcript) if m["role"] == "tool")
    after_tool = transcript[tool_at + 1]
    assert after_tool["role"] == "user" and "indent with tabs" in after_tool["content"]
    assert "correction from the user" in after_tool["content"]
    first, second = scripted_llm.requests_for("[api-grandchild]")
    assert not any("indent with tabs" in str(m.get("content")) for m in first.messages)
    assert second.last_message["role"] == "user" and "indent with tabs" in second.last_message["content"]
    assert detail["state"] == "done" and detail["report"] == "listed, with tabs"


@pytest.mark.anyio
async def test_reconnecting_with_since_replays_what_was_missed(scripted_llm: ScriptedLLM, served: ServedHub) -> None:
    scripted_llm.script("[api-first]", [Reply(text="first done")])
    scripted_llm.script("[api-second]", [Reply(text="second done")])

    async with served.client() as http:
        async with served.events(since=0) as events:
            first = await _start(http, "[api-first] go")
            await events.until(lambda e: _state(e, first["id"], "done"))
            seen = list(events.seen)
        last = seen[-1]["seq"]

        second = await _start(http, "[api-second] go")  # while no one listens

        async def second_done() -> bool:
            return (await http.get(f"/api/agents/{second['id']}")).json()["state"] == "done"

        with anyio.fail_after(60):
            while not await second_done():
                await anyio.sleep(0.05)

        async with served.events(since=last) as events:
            await events.until(lambda e: _state(e, second["id"], "done"))
            replayed = list(events.seen)
        async with served.events(since=0) as events:
            await events.until(lambda e: e["seq"] == seen[-1]["seq"])
            again = list(events.seen)

    # what streamed while the first connection listened (model.delta, tool.output) is never stored,
    # so never replayed: each carries the number of the stored event before it
    ephemeral = {kind.model_fields["type"].default for kind in EPHEMERAL}
    stored = [e for e in seen if e["type"] not in ephemeral]
    seqs = [e["seq"] for e in replayed if e["type"] not in ephemeral]
    assert seqs == list(range(last + 1, last + 1 + len(seqs))), "a gap or a duplicate in the replay"
    assert any(e["type"] == "agent.spawned" and e["agent_id"] == second["id"] for e in replayed)
    assert [(e["seq"], e["type"]) for e in again] == [(e["seq"], e["type"]) for e in stored]
    assert [e["seq"] for e in stored] == list(range(stored[0]["seq"], last + 1))


# -- lifecycle -------------------------------------------------------------------------------------


def test_a_second_serve_prints_the_running_hubs_url_and_has_it_serve_another_project_too(
    served: ServedHub, project: Path, tmp_path: Path
) -> None:
    def serve(root: Path) -> subprocess.CompletedProcess[str]:
        command = [*DISPATCH, "serve", "--port", "0", "--root", str(root)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=dict(os.environ), check=False)

    same = serve(project)
    other_root = tmp_path / "other"
    other_root.mkdir()
    other = serve(other_root)
    broken_root = tmp_path / "broken"
    (broken_root / ".dispatch").mkdir(parents=True)
    (broken_root / ".dispatch" / "config.yaml").write_text("limits: {running_agents: zero}\n")
    broken = serve(broken_root)

    url = f"{served.base_url}/?token={served.token}"
    assert same.returncode == 0, same.stderr
    assert same.stdout.strip() == url
    assert f"pid {served.process.pid}" in same.stderr
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == url
    assert f"it serves {other_root.resolve()} too now" in other.stderr
    assert broken.returncode == 2 and "config.yaml" in broken.stderr and "running_agents" in broken.stderr
    with httpx.Client(base_url=served.base_url, headers=served.auth) as rest:
        projects = rest.get("/api/hub").json()["projects"]
    assert projects == [str(project.resolve()), str(other_root.resolve())]
    assert "Traceback" not in same.stderr + other.stderr + broken.stderr


def test_a_host_beyond_loopback_needs_the_opt_in(project: Path) -> None:
    refused = subprocess.run(
        [*DISPATCH, "serve", "--host", "0.0.0.0", "--root", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 2 and "--allow-remote" in refused.stderr


async def _until_stopping(http: httpx.AsyncClient, agent_id: str) -> None:
    """Wait until the hub refuses new work (it serves on while its agents finish their steps).
    Asking to resume a running agent is refused either way, and changes nothing."""
    with anyio.fail_after(60):
        while "stopping" not in (await http.post(f"/api/agents/{agent_id}/resume")).json()["detail"]:
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_sigterm_during_a_run_exits_0_and_the_agent_resumes_later(
    scripted_llm: ScriptedLLM, project: Path
) -> None:
    working, release = threading.Event(), threading.Event()

    async def long_step(_: RecordedRequest) -> Reply:
        working.set()
        await asyncio.to_thread(release.wait, 60)
        return Reply(tool_calls=[call("list_dir", path=".")])

    scripted_llm.script("[api-long]", [long_step, Reply(text="finished after the restart")])
    hub = start_hub(project, "--deadline", "10")
    try:
        async with hub.client() as http:
            agent = await _start(http, "[api-long] take a while")
            assert await anyio.to_thread.run_sync(working.wait, 60)
            hub.signal(signal.SIGTERM)
            await _until_stopping(http, agent["id"])
        release.set()  # the running step may finish within the deadline; then the agent stops
        assert await anyio.to_thread.run_sync(hub.wait) == 0, hub.stderr()
    finally:
        release.set()
        hub.stop()
    assert "Traceback" not in hub.stderr()

    again = start_hub(project, "--deadline", "5")
    try:
        async with again.client() as http:
            listed = {a["id"]: a for a in (await http.get("/api/agents")).json()}
            assert listed[agent["id"]]["state"] == "interrupted", listed[agent["id"]]
            async with again.events(since=None) as events:
                resumed = await http.post(f"/api/agents/{agent['id']}/resume")
                assert resumed.status_code == 200, resumed.text
                await events.until(lambda e: _state(e, agent["id"], "done"))
            done = (await http.get(f"/api/agents/{agent['id']}")).json()
            assert done["report"] == "finished after the restart"
    finally:
        assert again.stop() == 0, again.stderr()


# -- the listening socket ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_hubs_connections_send_without_nagle_delay() -> None:
    """Every accepted connection has TCP_NODELAY, so a response's body never waits for the client's
    delayed ACK of its headers (about 40 ms a request on Linux otherwise)."""
    sock = _listen("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            connection = transport.get_extra_info("socket")
            accepted.set_result(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    async with server:
        port = sock.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(accepted, 10) == 1
        writer.close()
