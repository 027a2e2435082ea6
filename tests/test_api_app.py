"""The API app in process, over a real hub whose agents the in-process scripted model answers: the
guard (token, Host, Origin), every mistake a 4xx that says what is wrong, the views, and the event
WebSocket with ``since`` replay.

The same API against a real hub in a ``dispatch serve`` subprocess: ``tests/test_api_serve.py``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from dispatch.hub.api import app as api
from dispatch.hub.api.app import create_app
from dispatch.hub.api.auth import LOOPBACK_HOSTS
from dispatch.hub.llm.scripted import Reply, ScriptedModel, Step
from dispatch.hub.service.hub import Hub
from tests.agent_helpers import call
from tests.api_helpers import hub_in_a_thread

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOLD = Reply(text="done", delay_s=3600)
"""A model call that lasts the whole test: the agent stays running until cancelled or the hub stops."""


@dataclass
class Served:
    """The real hub, its model and the portal of its event loop, for what a test sets up."""

    hub: Hub
    model: ScriptedModel
    portal: BlockingPortal
    client: TestClient
    _markers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def marker(self, *steps: Step) -> str:
        """A fresh marker for an agent's task, scripted with ``steps`` (by default: hold)."""
        marker = f"[agent-{next(self._markers)}]"
        self.model.script(marker, list(steps) or [HOLD])
        return marker

    def calls(self, marker: str) -> int:
        return len(self.model.requests_for(marker))

    def until(self, condition: Callable[[], object], timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, "the hub did not get there in time"
            time.sleep(0.01)

    def gate(self) -> anyio.Event:
        """An event in the hub's loop, for a step to wait on until the test opens it."""
        return self.portal.call(anyio.Event)

    def open(self, gate: anyio.Event) -> None:
        self.portal.call(gate.set)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    model = ScriptedModel()
    with model, hub_in_a_thread(tmp_path, model) as (portal, hub):
        app = create_app(hub, token=TOKEN, allowed_hosts=(*LOOPBACK_HOSTS, "testserver"))
        client = TestClient(app, headers=AUTH)
        client.portal = portal  # every request and socket in the hub's own event loop (not entered:
        try:  # entering would start a portal of its own)
            yield Served(hub, model, portal, client)
        finally:
            client.close()


@pytest.fixture
def client(served: Served) -> TestClient:
    return served.client


def start(served: Served, task: str = "do it", *steps: Step, detached: bool = False) -> dict[str, Any]:
    """Start an agent on ``task`` scripted with ``steps`` (hold, by default); returns once it has
    made its first model call."""
    marker = served.marker(*steps)
    response = served.client.post("/api/agents", json={"task": f"{marker} {task}", "detached": detached})
    assert response.status_code == 201, response.text
    served.until(lambda: served.calls(marker))
    return response.json() | {"marker": marker}


# -- the guard -------------------------------------------------------------------------------------


def test_requests_without_the_token_get_401(client: TestClient) -> None:
    for method, path in [("GET", "/api/agents"), ("POST", "/api/chats"), ("GET", "/api/usage"), ("GET", "/")]:
        response = client.request(method, path, headers={"Authorization": ""})
        assert response.status_code == 401, path
        assert "token" in response.json()["detail"]
    assert client.get("/api/agents", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_the_token_may_come_in_the_query(client: TestClient) -> None:
    assert client.get(f"/api/agents?token={TOKEN}", headers={"Authorization": ""}).json() == []


def test_health_needs_no_token_and_the_schema_needs_it(client: TestClient) -> None:
    assert client.get("/api/health", headers={"Authorization": ""}).json() == {"status": "ok"}
    assert client.get("/openapi.json", headers={"Authorization": ""}).status_code == 401
    assert "/api/agents/{agent_id}/messages" in client.get("/openapi.json").json()["paths"]


def test_a_foreign_origin_is_refused(client: TestClient) -> None:
    response = client.get("/api/agents", headers={"Origin": "http://evil.example"})
    assert response.status_code == 403
    assert "origin" in response.json()["detail"]
    assert client.get("/api/health", headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.get("/api/agents", headers={"Origin": "http://localhost:8421"}).status_code == 403  # another port
    assert client.get("/api/agents", headers={"Origin": "http://testserver"}).status_code == 200  # its own (port 80)


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


def test_malformed_bodies_say_what_is_wrong(served: Served, client: TestClient) -> None:
    agent = start(served)
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
    # times past either end of what UTC can hold once their offset is applied: the first or last time
    early = client.get("/api/chats", params={"since": "0001-01-02", "until": "0001-01-01T00:00:01+05:00"})
    assert early.status_code == 200 and early.json() == []
    late = client.get("/api/chats", params={"since": "9999-12-31T23:59:59-05:00"})
    assert late.status_code == 200 and late.json() == []


def test_a_wrong_kind_is_refused_naming_the_kinds(served: Served, client: TestClient) -> None:
    agent = start(served)
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


def test_what_the_service_refuses_is_400_with_its_reason(served: Served, client: TestClient) -> None:
    agent = start(served, "finish at once", Reply(text="finished"))
    served.until(lambda: client.get(f"/api/agents/{agent['id']}").json()["state"] == "done")
    response = client.post(f"/api/agents/{agent['id']}/messages", json={"text": "too late"})
    assert response.status_code == 400
    assert "has finished" in response.json()["detail"]
    assert client.post(f"/api/agents/{agent['id']}/resume").status_code == 400


# -- the views -------------------------------------------------------------------------------------


def test_agents_messages_model_and_cancel(served: Served, client: TestClient) -> None:
    gate = served.gate()

    async def look_around(_: object) -> Reply:  # a tool call once the message is in: it reads it after
        await gate.wait()
        return Reply(tool_calls=[call("list_dir", path=".")])

    agent = start(served, "write the notes", look_around, HOLD)
    assert [a["id"] for a in client.get("/api/agents").json()] == [agent["id"]]

    sent = client.post(f"/api/agents/{agent['id']}/messages", json={"text": "use British spelling", "kind": "context"})
    assert sent.status_code == 202 and sent.json()["message_id"]
    served.open(gate)
    served.until(lambda: served.calls(agent["marker"]) == 2)
    detail = client.get(f"/api/agents/{agent['id']}").json()
    delivered = detail["transcript"][-1]
    assert delivered["role"] == "user" and delivered["content"].endswith("\nuse British spelling")
    assert sent.json()["message_id"] in delivered["content"]

    switched = client.post(f"/api/agents/{agent['id']}/model", json={"model": "openai/other"}).json()
    assert switched["model"] == "openai/other" and "transcript" not in switched
    assert client.post(f"/api/agents/{agent['id']}/cancel").json()["state"] == "cancelled"


def test_the_agents_list_answers_304_while_no_agent_changed(served: Served, client: TestClient) -> None:
    agent = start(served, "hold on")
    first = client.get("/api/agents")
    etag = first.headers["etag"]
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
    [listed] = first.json()
    assert listed == served.portal.call(served.hub.view, agent["id"]).model_dump(mode="json")
    again = client.get("/api/agents", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert client.get("/api/agents", headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304

    client.post(f"/api/agents/{agent['id']}/model", json={"model": "openai/other"})
    switched = client.get("/api/agents", headers={"If-None-Match": etag})  # changed: the new list, a new tag
    assert switched.status_code == 200 and switched.headers["etag"] != etag
    assert [a["model"] for a in switched.json()] == ["openai/other"]
    client.post(f"/api/agents/{agent['id']}/cancel")
    cancelled = client.get("/api/agents", headers={"If-None-Match": switched.headers["etag"]})
    assert cancelled.status_code == 200 and [a["state"] for a in cancelled.json()] == ["cancelled"]


def test_chats_fork_and_search(served: Served, client: TestClient) -> None:
    chat = client.post("/api/chats", json={"title": "Release"}).json()
    served.model.script("[chat]", [HOLD])  # the chat's agent runs on its first message and reads the rest
    texts = ["[chat] a", "b", "c"]
    ids = [client.post(f"/api/chats/{chat['id']}/messages", json={"text": t}).json()["id"] for t in texts]
    client.post(f"/api/chats/{chat['id']}/messages", json={"text": "the word zeppelin"})
    served.until(lambda: served.calls("[chat]"))

    fork = client.post(f"/api/chats/{chat['id']}/fork", json={"message_id": ids[2]})
    assert fork.status_code == 201
    forked = client.get(f"/api/chats/{fork.json()['id']}").json()
    assert [m["id"] for m in forked["messages"]] == ids
    assert len(client.get(f"/api/chats/{chat['id']}").json()["messages"]) == 4
    assert [c["id"] for c in client.get("/api/chats", params={"q": "zeppelin"}).json()] == [chat["id"]]
    assert client.get("/api/chats", params={"until": "2000-01-01"}).json() == []
    assert client.post("/api/chats").status_code == 201  # the body is optional


def test_approvals_artifacts_and_usage(served: Served, client: TestClient, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "hosts"
    outside.parent.mkdir()
    outside.write_text("127.0.0.1 localhost\n")
    agent = start(
        served,
        "plan, then read a file outside the project",
        Reply(tool_calls=[call("save_artifact", kind="plan", title="The plan", content="step one")]),
        Reply(tool_calls=[call("read_file", path=str(outside))]),  # waits for the user's approval
        Reply(text="read it"),
    )
    served.until(lambda: client.get("/api/approvals").json())

    [asked] = client.get("/api/approvals").json()
    assert (asked["kind"], asked["agent_id"], asked["path"], asked["operation"]) == (
        "path", agent["id"], str(outside), "read"
    )  # fmt: skip
    answered = client.post(f"/api/approvals/{asked['id']}", json={"decision": "approve", "remember": "session"})
    assert answered.json()["state"] == "approved"
    assert client.get("/api/approvals").json() == []
    assert [a["id"] for a in client.get("/api/approvals", params={"state": "all"}).json()] == [asked["id"]]
    assert client.post(f"/api/approvals/{asked['id']}", json={"decision": "maybe"}).status_code == 422
    assert client.post(f"/api/approvals/{asked['id']}", json={"decision": "deny"}).status_code == 400  # answered
    served.until(lambda: client.get(f"/api/agents/{agent['id']}").json()["state"] == "done")

    [plan] = client.get("/api/artifacts", params={"kind": "plan"}).json()
    assert plan["content"] is None and plan["title"] == "The plan"
    assert client.get(f"/api/artifacts/{plan['id']}").json()["content"] == "step one"
    assert client.get("/api/usage").json()["total"]["cost_usd"] == 0


def test_the_root_page_answers_naming_the_docs(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert "/docs" in response.text


# -- events ----------------------------------------------------------------------------------------


def _read_until(socket: Any, matches: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Events up to and including the first that matches."""
    events: list[dict[str, Any]] = []
    while not events or not matches(events[-1]):
        events.append(socket.receive_json())
    return events


def test_events_stream_live_and_replay_what_was_missed(served: Served, client: TestClient) -> None:
    gate = served.gate()

    async def after_the_message(_: object) -> Reply:
        await gate.wait()
        return Reply(tool_calls=[call("list_dir", path=".")])

    agent = start(served, "listen", after_the_message, HOLD)
    with client.websocket_connect("/api/events?since=0") as socket:
        spawned = socket.receive_json()
        assert (spawned["seq"], spawned["type"], spawned["agent_id"]) == (1, "agent.spawned", agent["id"])
        message_id = client.post(f"/api/agents/{agent['id']}/messages", json={"text": "hi"}).json()["message_id"]
        served.open(gate)
        seen = [spawned, *_read_until(socket, lambda e: e["type"] == "message.delivered")]
        assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1)), "every event, in order, none twice"
        sent = next(e for e in seen if e["type"] == "message.sent")
        assert sent["data"]["message_id"] == seen[-1]["data"]["message_id"] == message_id
        last = seen[-1]["seq"]

    client.post(f"/api/agents/{agent['id']}/model", json={"model": "openai/other"})  # while disconnected
    client.post(f"/api/agents/{agent['id']}/cancel")
    with client.websocket_connect(f"/api/events?since={last}") as socket:
        missed = _read_until(socket, lambda e: e["type"] == "agent.state" and e["data"]["state"] == "cancelled")
        assert [e["seq"] for e in missed] == list(range(last + 1, last + 1 + len(missed)))
        assert missed[0]["type"] == "agent.model" and missed[0]["data"]["model"] == "openai/other"
        socket.send_text("ping")  # what a client sends is ignored
        another = start(served, "another")
        event = socket.receive_json()
        assert (event["seq"], event["type"], event["agent_id"]) == (
            missed[-1]["seq"] + 1,
            "agent.spawned",
            another["id"],
        )


def test_a_bad_since_is_refused(client: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/api/events?since=-1"):
        pass
    assert refused.value.code == 1008


def test_only_new_events_without_since(served: Served, client: TestClient) -> None:
    start(served, "before")
    with client.websocket_connect("/api/events") as socket:
        last = served.hub.last_event_id
        agent = start(served, "after")
        event = socket.receive_json()
        assert (event["seq"], event["agent_id"]) == (last + 1, agent["id"])


def test_a_detached_agent_is_answered_in_its_thread(served: Served, client: TestClient) -> None:
    agent = start(
        served, "ask me", Reply(tool_calls=[call("ask_user", question="Which database?")]), HOLD, detached=True
    )
    served.until(lambda: client.get(f"/api/agents/{agent['id']}").json()["state"] == "waiting_user")
    assert client.get("/api/threads").json()[0]["question"] == "Which database?"

    answer = client.post(f"/api/threads/{agent['id']}/messages", json={"text": "SQLite"})
    assert answer.status_code == 201 and answer.json()["role"] == "user"
    thread = client.get(f"/api/threads/{agent['id']}").json()
    assert [(m["role"], m["text"]) for m in thread["messages"]] == [("agent", "Which database?"), ("user", "SQLite")]
    served.until(lambda: served.calls(agent["marker"]) == 2)  # the answer reached the model
    assert client.get(f"/api/agents/{agent['id']}").json()["state"] == "running"

    plain = start(served)
    assert client.post(f"/api/threads/{plain['id']}/messages", json={"text": "hi"}).status_code == 404
    assert client.post(f"/api/threads/{agent['id']}/messages", json={"text": ""}).status_code == 422


def test_the_web_ui_is_served_at_the_root_after_the_api(
    served: Served, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("<h1>the UI</h1>")
    monkeypatch.setattr(api, "_web_dir", lambda: tmp_path)
    client = TestClient(create_app(served.hub, token=TOKEN, allowed_hosts=("testserver",)), headers=AUTH)
    client.portal = served.portal
    assert client.get("/").text == "<h1>the UI</h1>"
    assert client.get("/api/agents").json() == []  # the mount at / does not shadow the API
    assert client.get("/missing.js").status_code == 404


def test_a_bug_is_a_json_500_not_a_crash(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(served.hub, "usage", broken)
    app = create_app(served.hub, token=TOKEN, allowed_hosts=("testserver",))
    client = TestClient(app, headers=AUTH, raise_server_exceptions=False)
    client.portal = served.portal
    response = client.get("/api/usage")
    assert response.status_code == 500
    assert "RuntimeError" in response.json()["detail"] and "boom" not in response.text
