"""The API app in process, over the in-memory hub: the guard (token, Host, Origin), every mistake a
4xx that says what is wrong, the views, and the event WebSocket with ``since`` replay.

The same API against a real hub in a ``dispatch serve`` subprocess: ``tests/test_api_serve.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from dispatch.hub.api import app as api
from dispatch.hub.api.app import create_app
from dispatch.hub.api.auth import LOOPBACK_HOSTS
from dispatch.hub.views import ApprovalView, ArtifactView
from tests.fakes.memory_hub import MemoryHub

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def hub() -> MemoryHub:
    return MemoryHub()


@pytest.fixture
def client(hub: MemoryHub) -> Iterator[TestClient]:
    app = create_app(hub, token=TOKEN, allowed_hosts=(*LOOPBACK_HOSTS, "testserver"))
    with TestClient(app, headers=AUTH) as client:  # one event loop for every request and socket
        yield client


def start(client: TestClient, task: str = "do it") -> dict[str, Any]:
    response = client.post("/api/agents", json={"task": task})
    assert response.status_code == 201, response.text
    return response.json()


# -- the guard -------------------------------------------------------------------------------------


def test_requests_without_the_token_get_401(client: TestClient) -> None:
    for method, path in [("GET", "/api/agents"), ("POST", "/api/chats"), ("GET", "/api/usage"), ("GET", "/")]:
        response = client.request(method, path, headers={"Authorization": ""})
        assert response.status_code == 401, path
        assert "token" in response.json()["detail"]
    assert client.get("/api/agents", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_the_token_may_come_in_the_query(client: TestClient) -> None:
    assert client.get(f"/api/agents?token={TOKEN}", headers={"Authorization": ""}).json() == []


def test_health_and_the_schema_need_no_token(client: TestClient) -> None:
    assert client.get("/api/health", headers={"Authorization": ""}).json() == {"status": "ok"}
    assert (
        "/api/agents/{agent_id}/messages" in client.get("/openapi.json", headers={"Authorization": ""}).json()["paths"]
    )


def test_a_foreign_origin_is_refused(client: TestClient) -> None:
    response = client.get("/api/agents", headers={"Origin": "http://evil.example"})
    assert response.status_code == 403
    assert "origin" in response.json()["detail"]
    assert client.get("/api/health", headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.get("/api/agents", headers={"Origin": "http://localhost:8421"}).status_code == 200


def test_a_foreign_host_is_refused(client: TestClient) -> None:
    response = client.get("/api/agents", headers={"Host": "rebound.example:8421"})
    assert response.status_code == 403
    assert "host" in response.json()["detail"]


def test_the_websocket_is_guarded_too(client: TestClient) -> None:
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        client.websocket_connect("/api/events", headers={"Authorization": ""}),
    ):
        pass
    assert refused.value.status_code == 401 and "token" in refused.value.json()["detail"]
    with (
        pytest.raises(WebSocketDenialResponse) as foreign,
        client.websocket_connect(f"/api/events?token={TOKEN}", headers={"Origin": "http://evil.example"}),
    ):
        pass
    assert foreign.value.status_code == 403


# -- mistakes are 4xx with a message ---------------------------------------------------------------


def test_malformed_bodies_say_what_is_wrong(client: TestClient) -> None:
    agent = start(client)
    url = f"/api/agents/{agent['id']}/messages"

    bad_json = client.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 422 and "not valid JSON" in bad_json.json()["detail"]
    extra = client.post(url, json={"text": "hi", "colour": "red"})
    assert extra.status_code == 422 and "body.colour: Extra inputs are not permitted" in extra.json()["detail"]
    blank = client.post(url, json={"text": "   "})
    assert blank.status_code == 422 and "body.text" in blank.json()["detail"]
    missing = client.post(url, json={})
    assert missing.status_code == 422 and "body.text: Field required" in missing.json()["detail"]
    wrong_type = client.post("/api/agents", json={"task": "x", "detached": "yes"})
    assert wrong_type.status_code == 422 and "body.detached" in wrong_type.json()["detail"]
    bad_date = client.get("/api/chats", params={"since": "yesterday"})
    assert bad_date.status_code == 422 and "not an ISO 8601 date" in bad_date.json()["detail"]


def test_a_wrong_kind_is_refused_naming_the_kinds(client: TestClient) -> None:
    agent = start(client)
    for kind in ("report", "shout", 3):
        response = client.post(f"/api/agents/{agent['id']}/messages", json={"text": "hi", "kind": kind})
        assert response.status_code == 422
        assert "'instruction', 'correction', 'context' or 'data'" in response.json()["detail"]


def test_unknown_ids_are_404_naming_the_id(client: TestClient) -> None:
    for method, path, body in [
        ("GET", "/api/agents/nope", None),
        ("POST", "/api/agents/nope/messages", {"text": "hi"}),
        ("POST", "/api/agents/nope/model", {"model": "openai/x"}),
        ("POST", "/api/agents/nope/cancel", None),
        ("POST", "/api/agents/nope/resume", None),
        ("GET", "/api/chats/nope", None),
        ("POST", "/api/chats/nope/messages", {"text": "hi"}),
        ("POST", "/api/chats/nope/fork", {"message_id": "m1"}),
        ("POST", "/api/approvals/nope", {"decision": "approve"}),
        ("GET", "/api/artifacts/nope", None),
        ("GET", "/api/threads/nope", None),
        ("POST", "/api/threads/nope/messages", {"text": "yes"}),
    ]:
        response = client.request(method, path, json=body)
        assert response.status_code == 404, (path, response.text)
        assert "'nope'" in response.json()["detail"]


def test_what_the_service_refuses_is_400_with_its_reason(client: TestClient, hub: MemoryHub) -> None:
    agent = start(client)
    hub.finish(agent["id"])
    response = client.post(f"/api/agents/{agent['id']}/messages", json={"text": "too late"})
    assert response.status_code == 400
    assert "has finished" in response.json()["detail"]
    assert client.post(f"/api/agents/{agent['id']}/resume").status_code == 400


# -- the views -------------------------------------------------------------------------------------


def test_agents_messages_model_and_cancel(client: TestClient) -> None:
    agent = start(client, "write the notes")
    assert [a["id"] for a in client.get("/api/agents").json()] == [agent["id"]]

    sent = client.post(f"/api/agents/{agent['id']}/messages", json={"text": "use British spelling", "kind": "context"})
    assert sent.status_code == 202 and sent.json()["message_id"]
    detail = client.get(f"/api/agents/{agent['id']}").json()
    assert detail["transcript"][-1]["content"] == "use British spelling"

    switched = client.post(f"/api/agents/{agent['id']}/model", json={"model": "openai/other"}).json()
    assert switched["model"] == "openai/other" and "transcript" not in switched
    assert client.post(f"/api/agents/{agent['id']}/cancel").json()["state"] == "cancelled"


def test_chats_fork_and_search(client: TestClient) -> None:
    chat = client.post("/api/chats", json={"title": "Release"}).json()
    ids = [client.post(f"/api/chats/{chat['id']}/messages", json={"text": t}).json()["id"] for t in "abc"]
    client.post(f"/api/chats/{chat['id']}/messages", json={"text": "the word zeppelin"})

    fork = client.post(f"/api/chats/{chat['id']}/fork", json={"message_id": ids[2]})
    assert fork.status_code == 201
    forked = client.get(f"/api/chats/{fork.json()['id']}").json()
    assert [m["id"] for m in forked["messages"]] == ids
    assert len(client.get(f"/api/chats/{chat['id']}").json()["messages"]) == 4
    assert [c["id"] for c in client.get("/api/chats", params={"q": "zeppelin"}).json()] == [chat["id"]]
    assert client.get("/api/chats", params={"until": "2000-01-01"}).json() == []
    assert client.post("/api/chats").status_code == 201  # the body is optional


def test_approvals_artifacts_and_usage(client: TestClient, hub: MemoryHub) -> None:
    hub.approvals_by_id["p1"] = ApprovalView(
        id="p1", kind="path", agent_id="a1", chain=["dispatch", "coder"], path="/etc/hosts", operation="read",
        checkpoint=None, content=None, created_at="2026-01-01T00:00:00+00:00", auto_approve_at=None, state="pending",
    )  # fmt: skip
    hub.artifacts_by_id["r1"] = ArtifactView(
        id="r1", kind="plan", title="The plan", agent_id="a1", created_at="2026-01-01", content="step one"
    )

    assert [a["id"] for a in client.get("/api/approvals").json()] == ["p1"]
    answered = client.post("/api/approvals/p1", json={"decision": "approve", "remember": "session"})
    assert answered.json()["state"] == "approved"
    assert client.get("/api/approvals").json() == []
    assert [a["id"] for a in client.get("/api/approvals", params={"state": "all"}).json()] == ["p1"]
    assert client.post("/api/approvals/p1", json={"decision": "maybe"}).status_code == 422
    assert client.post("/api/approvals/p1", json={"decision": "deny"}).status_code == 400  # answered already

    assert client.get("/api/artifacts", params={"kind": "plan"}).json()[0]["content"] is None
    assert client.get("/api/artifacts/r1").json()["content"] == "step one"
    assert client.get("/api/usage").json()["total"]["cost_usd"] == 0


def test_the_root_page_answers_with_a_link_to_the_docs(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert 'href="/docs"' in response.text


# -- events ----------------------------------------------------------------------------------------


def test_events_stream_live_and_replay_what_was_missed(client: TestClient) -> None:
    agent = start(client)
    with client.websocket_connect("/api/events?since=0") as socket:
        spawned = socket.receive_json()
        assert (spawned["seq"], spawned["type"], spawned["agent_id"]) == (1, "agent.spawned", agent["id"])
        message_id = client.post(f"/api/agents/{agent['id']}/messages", json={"text": "hi"}).json()["message_id"]
        sent, delivered = socket.receive_json(), socket.receive_json()
        assert (sent["type"], delivered["type"]) == ("message.sent", "message.delivered")
        assert delivered["data"]["message_id"] == message_id and delivered["seq"] == 3

    client.post(f"/api/agents/{agent['id']}/model", json={"model": "openai/other"})  # while disconnected
    client.post(f"/api/agents/{agent['id']}/cancel")
    with client.websocket_connect("/api/events?since=3") as socket:
        missed = [socket.receive_json(), socket.receive_json()]
        assert [(e["seq"], e["type"]) for e in missed] == [(4, "agent.model"), (5, "agent.state")]
        socket.send_text("ping")  # what a client sends is ignored
        client.post("/api/agents", json={"task": "another"})
        assert socket.receive_json()["seq"] == 6


def test_a_bad_since_is_refused(client: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/api/events?since=-1"):
        pass
    assert refused.value.code == 1008


def test_only_new_events_without_since(client: TestClient) -> None:
    start(client, "before")
    with client.websocket_connect("/api/events") as socket:
        agent = start(client, "after")
        event = socket.receive_json()
        assert (event["seq"], event["agent_id"]) == (2, agent["id"])


def test_a_detached_agent_is_answered_in_its_thread(client: TestClient, hub: MemoryHub) -> None:
    agent = client.post("/api/agents", json={"task": "ask me", "detached": True}).json()
    hub.ask(agent["id"], "Which database?")
    assert client.get("/api/threads").json()[0]["question"] == "Which database?"
    assert client.get(f"/api/agents/{agent['id']}").json()["state"] == "waiting_user"

    answer = client.post(f"/api/threads/{agent['id']}/messages", json={"text": "SQLite"})
    assert answer.status_code == 201 and answer.json()["role"] == "user"
    thread = client.get(f"/api/threads/{agent['id']}").json()
    assert [(m["role"], m["text"]) for m in thread["messages"]] == [("agent", "Which database?"), ("user", "SQLite")]
    assert client.get(f"/api/agents/{agent['id']}").json()["state"] == "running"

    plain = start(client)
    assert client.post(f"/api/threads/{plain['id']}/messages", json={"text": "hi"}).status_code == 404
    assert client.post(f"/api/threads/{agent['id']}/messages", json={"text": ""}).status_code == 422


def test_the_web_ui_is_served_at_the_root_after_the_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<h1>the UI</h1>")
    monkeypatch.setattr(api, "_web_dir", lambda: tmp_path)
    app = create_app(MemoryHub(), token=TOKEN, allowed_hosts=("testserver",))
    with TestClient(app, headers=AUTH) as client:
        assert client.get("/").text == "<h1>the UI</h1>"
        assert client.get("/api/agents").json() == []  # the mount at / does not shadow the API
        assert client.get("/missing.js").status_code == 404


def test_a_bug_is_a_json_500_not_a_crash(hub: MemoryHub, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(hub, "usage", broken)
    app = create_app(hub, token=TOKEN, allowed_hosts=("testserver",))
    with TestClient(app, headers=AUTH, raise_server_exceptions=False) as client:
        response = client.get("/api/usage")
    assert response.status_code == 500
    assert "RuntimeError" in response.json()["detail"] and "boom" not in response.text
