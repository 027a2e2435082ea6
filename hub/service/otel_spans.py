"""The hub's events as OpenTelemetry spans, after the GenAI semantic conventions, sent over OTLP/HTTP.

Imported only when traces are on (:mod:`dispatch.hub.service.tracing`): it needs the ``otel`` extra.
:func:`exporting` subscribes to the event bus and :class:`Spans` turns the events into spans with
the events' own times, so the agent loop knows nothing of it:

* ``invoke_agent NAME`` per agent run, from ``agent.spawned`` (or ``agent.resumed``) to the state
  that ends the run (``done``, ``failed``, ``cancelled``, ``interrupted``), a child's under its
  parent's: one trace per top agent;
* ``chat MODEL`` per model call, from when the call began to its answer, with its token usage;
* ``execute_tool TOOL`` per tool call, from ``tool.call`` to ``tool.result``.

Spans are batched (``BatchSpanProcessor``) and sent by the SDK's OTLP/HTTP exporter, configured by
the standard ``OTEL_*`` variables (endpoint, headers, timeout, service name, resource attributes,
sampler, batch sizes); on leaving :func:`exporting`, open spans end and the batch is flushed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from dispatch.hub.agents.spec import AgentState
from dispatch.hub.events import (
    AgentResumed,
    AgentSpawned,
    AgentStateChanged,
    AgentStepped,
    Event,
    EventBus,
    ToolCalled,
    ToolReturned,
    each_queued,
)

ENDED = frozenset({state.value for state in AgentState if state.terminal} | {AgentState.interrupted.value})
"""The agent states that end a run (``interrupted`` too: a resumed agent's run is a new span)."""

FLUSH_S = 5.0
"""How long leaving :func:`exporting` waits for the last events, and then for the last batch to go."""

PROVIDERS = {
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}
"""litellm's provider prefixes whose ``gen_ai.provider.name`` is spelled otherwise (the rest: as is)."""

Attributes = dict[str, AttributeValue]

_log = logging.getLogger(__name__)


def provider_of(model: str) -> str | None:
    """``gen_ai.provider.name`` of a litellm model name (``openai/gpt-4o`` -> ``openai``); None when
    the name has no provider prefix."""
    prefix, slash, _ = model.partition("/")
    return PROVIDERS.get(prefix, prefix) if slash and prefix else None


def _ns(at: float) -> int:
    return int(at * 1e9)


class Spans:
    """Spans from events, in the order the bus hands them on (the hub's own order)."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._agents: dict[str, Span] = {}
        """The open ``invoke_agent`` span of each running agent."""
        self._tools: dict[tuple[str, str], Span] = {}
        """The open ``execute_tool`` span of each (agent id, call id)."""

    def take(self, event: Event) -> None:
        at = _ns(event.at)
        match event.data:
            case AgentSpawned() | AgentResumed() as started:
                self._start_agent(event.agent_id, started, at)
            case AgentStateChanged(state=state) as changed if state in ENDED:
                self._end_agent(event.agent_id, changed, at)
            case AgentStepped() as step:
                self._chat(event.agent_id, step, at)
            case ToolCalled(call_id=call_id, name=name):
                attributes: Attributes = {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": name,
                    "gen_ai.tool.call.id": call_id,
                }
                span = self._tracer.start_span(
                    f"execute_tool {name}", self._under(event.agent_id), SpanKind.INTERNAL, attributes, start_time=at
                )
                self._tools[event.agent_id, call_id] = span
            case ToolReturned(call_id=call_id, is_error=is_error):
                span = self._tools.pop((event.agent_id, call_id), None)
                if span is not None:
                    if is_error:
                        span.set_attribute("error.type", "tool_error")
                        span.set_status(Status(StatusCode.ERROR, "the tool answered an error"))
                    span.end(at)
            case _:
                pass

    def close(self, at: float) -> None:
        """End every span still open (the hub is stopping)."""
        for span in [*self._tools.values(), *self._agents.values()]:
            span.end(_ns(at))
        self._tools.clear()
        self._agents.clear()

    def _under(self, agent_id: str | None) -> Context:
        """The context of a span under the agent's ``invoke_agent`` span (a new trace when none is open)."""
        span = self._agents.get(agent_id) if agent_id is not None else None
        return trace.set_span_in_context(span) if span is not None else Context()

    def _start_agent(self, agent_id: str, started: AgentSpawned | AgentResumed, at: int) -> None:
        stale = self._agents.pop(agent_id, None)
        if stale is not None:
            stale.end(at)
        attributes: Attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": started.name,
            "gen_ai.agent.id": agent_id,
            "gen_ai.request.model": started.model,
        }
        if started.chat_id is not None:
            attributes["gen_ai.conversation.id"] = started.chat_id
        if started.template is not None:
            attributes["dispatch.agent.template"] = started.template
        if isinstance(started, AgentResumed):
            attributes["dispatch.agent.resumed"] = True
        self._agents[agent_id] = self._tracer.start_span(
            f"invoke_agent {started.name}", self._under(started.parent_id), SpanKind.INTERNAL, attributes, start_time=at
        )

    def _end_agent(self, agent_id: str, changed: AgentStateChanged, at: int) -> None:
        span = self._agents.pop(agent_id, None)
        if span is None:
            return
        span.set_attribute("dispatch.agent.state", changed.state)
        if changed.state == AgentState.failed.value:
            span.set_attribute("error.type", "agent_failed")
            span.set_status(Status(StatusCode.ERROR, changed.error or changed.reason))
        span.end(at)

    def _chat(self, agent_id: str, step: AgentStepped, at: int) -> None:
        model = step.model or ""
        attributes: Attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": step.tokens_in,
            "gen_ai.usage.output_tokens": step.tokens_out,
            "dispatch.step": step.index,
            "dispatch.cost_usd": step.cost_usd,
        }
        if step.cache_read_tokens:
            attributes["gen_ai.usage.cache_read.input_tokens"] = step.cache_read_tokens
        if step.cache_write_tokens:
            attributes["gen_ai.usage.cache_creation.input_tokens"] = step.cache_write_tokens
        if model:
            attributes["gen_ai.request.model"] = model
        if (provider := provider_of(model)) is not None:
            attributes["gen_ai.provider.name"] = provider
        start = _ns(step.asked_at) if step.asked_at is not None else at
        end = _ns(step.answered_at) if step.answered_at is not None else at
        span = self._tracer.start_span(
            f"chat {model}".strip(), self._under(agent_id), SpanKind.CLIENT, attributes, start_time=start
        )
        span.end(end)


def _provider() -> TracerProvider:
    """The SDK's provider, batching to the OTLP/HTTP exporter, both as the ``OTEL_*`` variables say."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):  # no OTEL_SERVICE_NAME
        resource = resource.merge(Resource({SERVICE_NAME: "dispatch"}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


@asynccontextmanager
async def exporting(bus: EventBus) -> AsyncGenerator[None]:
    """The events of ``bus`` as spans while open. The hub stops before this is left, and its stop
    ends the subscription after the last event: what is left open then is ended, and the batch sent
    (each waited for at most :data:`FLUSH_S`)."""
    provider = _provider()
    spans = Spans(provider.get_tracer("dispatch.hub"))
    followed = anyio.Event()

    async def follow(stream: MemoryObjectReceiveStream[Event]) -> None:
        async for event in each_queued(stream):
            try:
                spans.take(event)
            except Exception:  # a span lost, never the hub
                _log.exception("could not trace event %s (%s)", event.seq, event.type)
        followed.set()

    detach = _into_hub_log()
    try:
        async with bus.subscribe() as stream, anyio.create_task_group() as group:
            group.start_soon(follow, stream, name="traces")
            try:
                yield
                with anyio.CancelScope(shield=True), anyio.move_on_after(FLUSH_S):
                    await followed.wait()
            finally:
                group.cancel_scope.cancel()
    finally:
        spans.close(time.time())

        def shut_down() -> None:
            provider.shutdown()
            detach()  # here, not on leaving: a batch still trying when the wait ends may log its failure

        with anyio.CancelScope(shield=True), anyio.move_on_after(FLUSH_S):
            await anyio.to_thread.run_sync(shut_down, abandon_on_cancel=True)


def _into_hub_log() -> Callable[[], None]:
    """Route OpenTelemetry's own records (an unreachable collector, say) to the hub's log rather than
    the terminal, until the function returned is called."""
    logger = logging.getLogger("opentelemetry")
    handlers, propagate = list(logging.getLogger("dispatch").handlers), logger.propagate
    for handler in handlers:
        logger.addHandler(handler)
    logger.propagate = not handlers

    def detach() -> None:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.propagate = propagate

    return detach
