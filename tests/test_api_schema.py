"""Schemathesis over the API's own OpenAPI schema: whatever it sends, the answer is never a 500,
every answer matches the schema (errors included), and what the schema forbids is refused.

Two checks are left out: ``positive_data_acceptance`` (a well-formed request for an id that does
not exist is rightly a 404, and the schema cannot know which ids exist) and the ``Allow``-header
checks on 405 answers (Starlette names only the methods of the first route that matches a path).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from dispatch.hub.api.app import create_app
from dispatch.hub.api.auth import LOOPBACK_HOSTS
from tests.api_helpers import ServedHub, start_hub
from tests.fakes.memory_hub import MemoryHub

TOKEN = "schema-token"
LEFT_OUT = [checks.positive_data_acceptance, checks.unsupported_method, checks.allow_header_conformance]

# schemathesis' lazy `from_fixture` does not work with pytest 9 (it reads `request.node._nodeid`), so
# the app is made at import; the in-memory hub is cheap and holds nothing until a test calls it.
_app = create_app(MemoryHub(), token=TOKEN, allowed_hosts=(*LOOPBACK_HOSTS, "testserver"))
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@schema.parametrize()
@settings(max_examples=60, database=None, suppress_health_check=list(HealthCheck), deadline=None)
def test_no_input_makes_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=LEFT_OUT)


def _seed(hub: ServedHub) -> dict[str, str]:
    """Real ids for the path parameters: a detached agent (so it has a thread) and a chat with a
    message. Their agents reach no model and fail, which gives the API finished agents to refuse."""
    with httpx.Client(base_url=hub.base_url, headers=hub.auth, timeout=30) as http:
        agent = http.post("/api/agents", json={"task": "seed", "model": "openai/nowhere", "detached": True}).json()
        chat = http.post("/api/chats", json={"title": "seed"}).json()
        posted = http.post(f"/api/chats/{chat['id']}/messages", json={"text": "hello"})
        assert posted.status_code == 201, posted.text
    return {"agent_id": agent["id"], "chat_id": chat["id"]}


def test_the_real_hub_makes_no_server_error_either(tmp_path: Path) -> None:
    """The same checks against ``dispatch serve`` over HTTP, its store and services real: random
    and schema-violating requests, and random requests about ids that exist. Its agents reach no
    model: every call they make fails, which is theirs to report, not the API's."""
    root = tmp_path / "project"
    (root / ".dispatch" / "templates").mkdir(parents=True)
    (root / ".dispatch" / "templates" / "dispatch.yaml").write_text(  # chats' agents need a model
        "name: dispatch\nmodel: openai/nowhere\ntools: {fs: true, summon: true}\n"
    )
    hub = start_hub(root, "--deadline", "2")
    failures: list[str] = []
    try:
        seeds = _seed(hub)
        live = schemathesis.openapi.from_url(hub.base_url + "/openapi.json")
        for result in live.get_all_operations():
            operation = result.ok()
            names = [p.name for p in operation.path_parameters]
            strategies = [operation.as_strategy(), operation.as_strategy(GenerationMode.NEGATIVE)]
            if names and all(n in seeds for n in names):
                strategies.append(operation.as_strategy(path_parameters={n: seeds[n] for n in names}))

            @given(case=st.one_of(strategies))
            @settings(max_examples=30, database=None, suppress_health_check=list(HealthCheck), deadline=None)
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=hub.base_url, headers=hub.auth, excluded_checks=LEFT_OUT, timeout=30)

            try:
                check()
            except Exception as error:
                failures.append(f"{operation.label}: {error}")
    finally:
        code = hub.stop()
    assert not failures, "\n\n".join(failures)
    assert code == 0, hub.stderr()
