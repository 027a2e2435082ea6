"""Schemathesis over the API's own OpenAPI schema: whatever it sends, the answer is never a 500,
every answer matches the schema (errors included), and what the schema forbids is refused. Twice:
against a real hub in this process whose agents the scripted model answers, and against
``dispatch serve`` in a subprocess whose agents reach no model.

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
from dispatch.hub.llm.scripted import Reply, ScriptedModel
from tests.agent_helpers import call
from tests.api_helpers import hub_in_a_thread, served_in_process, start_hub

TOKEN = "schema-token"
LEFT_OUT = [checks.positive_data_acceptance, checks.unsupported_method, checks.allow_header_conformance]


def _seed(base_url: str, auth: dict[str, str], model: str) -> dict[str, str]:
    """Real ids for the path parameters: a detached agent (so it has a thread) and a chat with a
    message."""
    with httpx.Client(base_url=base_url, headers=auth, timeout=30) as http:
        task = {"task": "[seed] ask the user", "model": model, "detached": True}
        agent = http.post("/api/agents", json=task).json()
        chat = http.post("/api/chats", json={"title": "seed"}).json()
        posted = http.post(f"/api/chats/{chat['id']}/messages", json={"text": "[seed-chat] hello"})
        assert posted.status_code == 201, posted.text
    return {"agent_id": agent["id"], "chat_id": chat["id"]}


def _check_every_operation(base_url: str, auth: dict[str, str], seeds: dict[str, str], examples: int) -> list[str]:
    """Random and schema-violating requests for every operation, and random ones about the seeded
    ids; the failures, one per operation that had any."""
    failures: list[str] = []
    live = schemathesis.openapi.from_url(base_url + "/openapi.json", headers=auth)
    for result in live.get_all_operations():
        operation = result.ok()
        names = [p.name for p in operation.path_parameters]
        strategies = [operation.as_strategy(), operation.as_strategy(GenerationMode.NEGATIVE)]
        if names and all(n in seeds for n in names):
            strategies.append(operation.as_strategy(path_parameters={n: seeds[n] for n in names}))

        @given(case=st.one_of(strategies))
        @settings(max_examples=examples, database=None, suppress_health_check=list(HealthCheck), deadline=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=base_url, headers=auth, excluded_checks=LEFT_OUT, timeout=30)

        try:
            check()
        except Exception as error:
            failures.append(f"{operation.label}: {error}")
    return failures


def test_no_input_makes_a_server_error(tmp_path: Path) -> None:
    """A real hub in process, its agents answered by the scripted model: the seeded agent waits
    for the user's answer in its thread, the chat's agent runs. The agents random requests start
    match no script: each fails, naming its task, which is theirs to report, not the API's; the
    seeded ones may run past their scripts (asked to compact, given more work)."""
    model = ScriptedModel()
    model.script("[seed]", [Reply(tool_calls=[call("ask_user", question="Which database?")]), Reply(text="ok")])
    model.script("[seed-chat]", [Reply(text="hello to you", delay_s=3600)])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with hub_in_a_thread(tmp_path, model) as (portal, hub):
        app = create_app(hub, token=TOKEN, allowed_hosts=(*LOOPBACK_HOSTS, "testserver"))
        with served_in_process(portal, app) as base_url:
            seeds = _seed(base_url, auth, "openai/scripted")
            failures = _check_every_operation(base_url, auth, seeds, examples=30)
    assert not failures, "\n\n".join(failures)
    assert model.requests_for("[seed]") and model.requests_for("[seed-chat]"), "the seeded agents ran"
    # what the random requests' agents asked matched no script; the seeded agents may be asked for
    # more than their scripts hold (compact the one waiting for its user, say): their scripts run out
    others = [f for f in model.failures if "no script matches" not in f and not f.startswith("script for '[seed")]
    assert not others, others


def test_the_real_hub_makes_no_server_error_either(tmp_path: Path) -> None:
    """The same checks against ``dispatch serve`` over HTTP, its store and services real. Its
    agents reach no model: every call they make fails, which is theirs to report, not the API's."""
    root = tmp_path / "project"
    (root / ".dispatch" / "templates").mkdir(parents=True)
    (root / ".dispatch" / "templates" / "dispatch.yaml").write_text(  # chats' agents need a model
        "name: dispatch\nmodel: openai/nowhere\ntools: {fs: true, summon: true}\n"
    )
    hub = start_hub(root, "--deadline", "2")
    try:
        seeds = _seed(hub.base_url, hub.auth, "openai/nowhere")
        failures = _check_every_operation(hub.base_url, hub.auth, seeds, examples=30)
    finally:
        code = hub.stop()
    assert not failures, "\n\n".join(failures)
    assert code == 0, hub.stderr()
