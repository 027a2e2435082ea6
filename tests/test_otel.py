"""OpenTelemetry traces: with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the hub's agents, model calls and
tool calls reach an OTLP/HTTP collector as GenAI spans; unset, neither the SDK nor the exporter is
loaded (the API is: the MCP SDK imports it)."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from dispatch.hub.cli.doctor import check_tracing
from dispatch.hub.llm.scripted import Fail, Reply, Script, ScriptedModel
from dispatch.hub.service.hub import Hub
from tests.agent_helpers import call
from tests.fakes.scripted_llm import ScriptedLLM

MODEL = "openai/scripted"


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


@dataclass
class Collector:
    """A small OTLP/HTTP collector: every span posted to ``/v1/traces``, decoded."""

    url: str = ""
    spans: list[Span] = field(default_factory=list[Span])
    resources: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    refused: list[str] = field(default_factory=list[str])

    def take(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            self.resources.append(_attributes(resource_spans.resource.attributes))
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)

    def named(self, prefix: str) -> list[Span]:
        return [span for span in self.spans if span.name.startswith(prefix)]


@pytest.fixture
def collector() -> Iterator[Collector]:
    received = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                received.refused.append(f"{self.path} {self.headers.get('Content-Type')}")
                self.send_response(404)
                self.end_headers()
                return
            received.take(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


def _delegating_model() -> ScriptedModel:
    summon = call("summon", task="[child] list the files", name="lister", wait=True)
    return ScriptedModel(
        [
            Script(
                match="[top]", steps=[Reply(tool_calls=[summon], usage=(120, 15)), Reply(text="done", usage=(200, 5))]
            ),
            Script(
                match="[child]",
                steps=[
                    Reply(tool_calls=[call("list_dir", path=".")], usage=(50, 10)),
                    Reply(text="two", usage=(80, 4)),
                ],
            ),
        ]
    )


@pytest.mark.anyio
async def test_agents_model_calls_and_tool_calls_reach_the_collector_as_genai_spans(
    tmp_path: Path, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "dispatch-under-test")
    root = tmp_path / "project"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    with _delegating_model() as model:
        async with Hub.open(root, tmp_path / "data", model=model, default_model=MODEL) as hub:
            view = await hub.start("[top] have the files listed")
            top = await hub.wait_finished(view.id)
            assert top.state == "done", top.reason
    # the hub has stopped: every span was sent before Hub.open returned

    assert collector.refused == []
    assert {r.get("service.name") for r in collector.resources} == {"dispatch-under-test"}
    agents = {span.name: span for span in collector.named("invoke_agent ")}
    assert set(agents) == {f"invoke_agent {view.name}", "invoke_agent lister"}
    parent, child = agents[f"invoke_agent {view.name}"], agents["invoke_agent lister"]
    assert child.trace_id == parent.trace_id and child.parent_span_id == parent.span_id
    assert not parent.parent_span_id  # the top agent's run is the trace's root
    assert _attributes(parent.attributes) | {"gen_ai.conversation.id": None} == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": view.name,
        "gen_ai.agent.id": view.id,
        "gen_ai.request.model": MODEL,
        "gen_ai.conversation.id": None,
        "dispatch.agent.template": view.template,
        "dispatch.agent.state": "done",
    }
    assert parent.start_time_unix_nano < child.start_time_unix_nano < child.end_time_unix_nano
    assert child.end_time_unix_nano <= parent.end_time_unix_nano

    chats = collector.named("chat ")
    assert {span.name for span in chats} == {f"chat {MODEL}"}
    usage: dict[bytes, set[tuple[int, int]]] = {}
    for span in chats:
        attributes = _attributes(span.attributes)
        assert attributes["gen_ai.operation.name"] == "chat"
        assert (attributes["gen_ai.request.model"], attributes["gen_ai.provider.name"]) == (MODEL, "openai")
        assert span.kind == Span.SpanKind.SPAN_KIND_CLIENT
        assert span.start_time_unix_nano <= span.end_time_unix_nano
        tokens = (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"])
        usage.setdefault(span.parent_span_id, set()).add(tokens)
    assert usage == {parent.span_id: {(120, 15), (200, 5)}, child.span_id: {(50, 10), (80, 4)}}

    tools = {span.name: span for span in collector.named("execute_tool ")}
    assert set(tools) == {"execute_tool summon", "execute_tool list_dir"}
    assert tools["execute_tool summon"].parent_span_id == parent.span_id
    listed = tools["execute_tool list_dir"]
    assert listed.parent_span_id == child.span_id
    attributes = _attributes(listed.attributes)
    assert (attributes["gen_ai.operation.name"], attributes["gen_ai.tool.name"]) == ("execute_tool", "list_dir")
    assert attributes["gen_ai.tool.call.id"]
    summoned = tools["execute_tool summon"]  # the child ran while its parent's summon call waited for it
    assert summoned.start_time_unix_nano < child.start_time_unix_nano
    assert child.end_time_unix_nano <= summoned.end_time_unix_nano


@pytest.mark.anyio
async def test_a_tool_error_and_a_failed_run_are_error_spans(
    tmp_path: Path, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    root = tmp_path / "project"
    root.mkdir()
    missing = Reply(tool_calls=[call("read_file", path="nowhere.txt")])
    refused = Fail(status=400, body={"error": {"message": "no such model"}})
    with ScriptedModel([Script(match="[top]", steps=[missing, refused])]) as model:
        async with Hub.open(root, tmp_path / "data", model=model, default_model="scripted") as hub:
            view = await hub.start("[top] read it")
            failed = await hub.wait_finished(view.id)
    assert failed.state == "failed"

    (agent,) = collector.named("invoke_agent ")
    assert agent.status.code == agent.status.STATUS_CODE_ERROR
    assert "no such model" in agent.status.message
    assert _attributes(agent.attributes)["dispatch.agent.state"] == "failed"
    (read,) = collector.named("execute_tool ")
    assert read.status.code == read.status.STATUS_CODE_ERROR
    assert _attributes(read.attributes)["error.type"] == "tool_error"
    (chat,) = collector.named("chat ")  # the failed call answered nothing: no span
    assert chat.name == "chat scripted" and "gen_ai.provider.name" not in _attributes(chat.attributes)


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_call_through_the_model_worker_has_its_provider_its_cached_tokens_and_its_own_times(
    tmp_path: Path, collector: Collector, scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    scripted_llm.script("[cached]", [Reply(tool_calls=[call("list_dir", path=".")]), Reply(text="listed")])
    root = tmp_path / "project"
    (root / ".dispatch").mkdir(parents=True)
    claude = {
        "name": "claude",
        "provider": "anthropic",
        "key": "sk-ant-test",
        "base_url": scripted_llm.anthropic_base_url,
    }
    models = {"keys": [claude | {"models": {"claude-sonnet-4-5": {"tags": ["heavy"]}}}]}
    (root / ".dispatch" / "config.yaml").write_text(yaml.safe_dump({"models": models}))
    async with Hub.open(root, tmp_path / "data", default_model="heavy") as hub:
        view = await hub.start("[cached] list the project")
        top = await hub.wait_finished(view.id)
        assert top.state == "done", top.reason

    (agent,) = collector.named("invoke_agent ")
    assert _attributes(agent.attributes)["gen_ai.request.model"] == "heavy"  # asked by tag, answered by a model
    first, second = sorted(collector.named("chat "), key=lambda span: span.start_time_unix_nano)
    assert first.name == second.name == "chat anthropic/claude-sonnet-4-5"
    one, two = _attributes(first.attributes), _attributes(second.attributes)
    assert one["gen_ai.provider.name"] == two["gen_ai.provider.name"] == "anthropic"
    # the first call writes its prompt to the provider's cache, the second reads it
    assert "gen_ai.usage.cache_read.input_tokens" not in one
    assert one["gen_ai.usage.cache_creation.input_tokens"] == one["gen_ai.usage.input_tokens"]
    assert 0 < two["gen_ai.usage.cache_read.input_tokens"] < two["gen_ai.usage.input_tokens"]
    # each span has its own times, the model worker's: the call answered, then its tool ran
    (listed,) = collector.named("execute_tool ")
    assert agent.start_time_unix_nano < first.start_time_unix_nano < first.end_time_unix_nano
    assert first.end_time_unix_nano <= listed.start_time_unix_nano < listed.end_time_unix_nano
    assert listed.end_time_unix_nano <= second.start_time_unix_nano


HUB_WITHOUT_TRACES = """
import sys, anyio
from pathlib import Path
from dispatch.hub.llm.scripted import Fail, Reply, Script, ScriptedModel
from dispatch.hub.service.hub import Hub

async def main() -> None:
    root = Path(sys.argv[1])
    with ScriptedModel([Script(match="[top]", steps=[Reply(text="done")])]) as model:
        async with Hub.open(root, root.parent / "data", model=model, default_model="scripted") as hub:
            view = await hub.start("[top] say done")
            assert (await hub.wait_finished(view.id)).state == "done"
    sdk = ("opentelemetry.sdk", "opentelemetry.exporter", "dispatch.hub.service.otel_spans")
    loaded = sorted(name for name in sys.modules if name.startswith(sdk))
    print(loaded)

anyio.run(main)
"""


@pytest.mark.slow
def test_without_an_endpoint_neither_the_sdk_nor_the_exporter_is_loaded(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", HUB_WITHOUT_TRACES, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_doctor_says_whether_traces_are_sent_and_where() -> None:
    off = check_tracing({})
    assert [(f.status, f.text) for f in off] == [("off", "no traces (OTEL_EXPORTER_OTLP_ENDPOINT is not set)")]
    on = check_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert [(f.status, f.text) for f in on] == [("ok", "spans go to http://collector:4318/v1/traces (OTLP/HTTP)")]
    whole = check_tracing({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/t", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"})
    assert [f.text for f in whole] == ["spans go to http://c:4318/t (OTLP/HTTP)"]
    disabled = check_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"})
    assert [f.status for f in disabled] == ["off"]


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_collector_out_of_reach_is_told_in_the_hubs_log_not_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    root = tmp_path / "project"
    root.mkdir()
    with ScriptedModel([Script(match="[top]", steps=[Reply(text="done")])]) as model:
        async with Hub.open(root, tmp_path / "data", model=model, default_model="scripted") as hub:
            view = await hub.start("[top] say done")
            assert (await hub.wait_finished(view.id)).state == "done"

    log = (tmp_path / "data" / "hub.log").read_text()
    assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" in log and "127.0.0.1" in log
    assert capfd.readouterr().err == ""
