"""Streaming: a model's answer reaches the hub's listeners as it is written (``model.delta``,
coalesced, never journaled) and a running command's output as it is printed (``tool.output``),
while what is stored, the answer's usage and the tool's result stay as they were."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.cli.live_view import LiveView
from dispatch.hub.events import (
    AgentReported,
    AgentStepped,
    Event,
    EventData,
    ModelDelta,
    ToolOutput,
    ToolReturned,
)
from dispatch.hub.llm.litellm_call import acompletion, load_litellm
from dispatch.hub.llm.scripted import Reply, ScriptedModel, ToolCall
from dispatch.hub.llm.types import Completion, JsonDict
from dispatch.hub.service.hub import Hub
from tests.agent_helpers import call
from tests.api_helpers import MODEL, ServedHub
from tests.fakes.scripted_llm import ScriptedLLM
from tests.hub_helpers import dirs
from tests.sandbox_helpers import needs_bwrap

pytestmark = pytest.mark.anyio

TOOLS: list[JsonDict] = [
    {
        "type": "function",
        "function": {
            "name": "write_file",
            "description": "Write a file.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                "required": ["path", "content"],
            },
        },
    }
]
ANSWER = "I will write the greeting module now, with its test beside it, and then run the test."
CALL = ToolCall("write_file", {"path": "greet.py", "content": "def greet(name):\n    return f'hi {name}'\n"})

Servers = Callable[[], ScriptedLLM]


def _face(llm: ScriptedLLM, provider: str) -> tuple[str, str]:
    if provider == "anthropic":
        return "anthropic/claude-sonnet-4-5", llm.anthropic_base_url
    return "openai/gpt-4o-mini", llm.base_url


async def _ask(
    llm: ScriptedLLM, provider: str, *, direct: bool, parts: list[tuple[float, str, str | None]] | None
) -> Completion:
    model, base = _face(llm, provider)
    messages = [{"role": "system", "content": "You are careful."}, {"role": "user", "content": "[go] greet"}]

    def on_part(text: str, tool: str | None) -> None:
        assert parts is not None
        parts.append((time.monotonic(), text, tool))

    return await acompletion(
        load_litellm(),
        model,
        messages,
        TOOLS,
        30.0,
        "sk-test",
        base,
        None,
        direct=direct,
        on_part=None if parts is None else on_part,
    )


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "acompletion"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_streamed_call_crossing_litellm_hands_on_its_parts_and_answers_as_unstreamed(
    scripted_llms: Servers, provider: str, direct: bool
) -> None:
    plain, streamed = scripted_llms(), scripted_llms()  # one each: each meets a fresh prompt cache
    for llm in (plain, streamed):
        llm.script("[go]", [Reply(text=ANSWER, tool_calls=[CALL], chunk_delay_s=0.01)] * 2)
    await _ask(plain, provider, direct=direct, parts=None)
    await _ask(streamed, provider, direct=direct, parts=[])  # litellm's first stream imports for seconds
    expected = await _ask(plain, provider, direct=direct, parts=None)
    parts: list[tuple[float, str, str | None]] = []
    answer = await _ask(streamed, provider, direct=direct, parts=parts)

    assert streamed.requests[1].body.get("stream") is True
    assert plain.requests[1].body.get("stream") in (None, False)
    text = "".join(t for _, t, tool in parts if tool is None)
    arguments = "".join(t for _, t, tool in parts if tool == "write_file")
    assert text == ANSWER and json.loads(arguments) == CALL.arguments
    assert parts[-1][0] - parts[0][0] > 0.1, "the parts came as the answer was written, not at its end"
    assert answer.text == expected.text == ANSWER
    assert [(c.name, json.loads(c.arguments)) for c in answer.tool_calls] == [("write_file", CALL.arguments)]
    assert answer.usage == expected.usage and answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "acompletion"])
async def test_an_endpoint_that_refuses_to_stream_answers_at_once_from_then_on(direct: bool) -> None:
    model = f"openai/no-streams-{'direct' if direct else 'acompletion'}"  # remembered per model
    with ScriptedLLM(streams=False) as llm:
        llm.script("[go]", [Reply(text=ANSWER, tool_calls=[CALL])] * 2)
        messages = [{"role": "user", "content": "[go] greet"}]
        parts: list[str] = []
        for _ in range(2):
            answer = await acompletion(
                load_litellm(), model, messages, TOOLS, 30.0, "sk-test", llm.base_url, None,
                direct=direct, on_part=lambda text, tool: parts.append(text),
            )  # fmt: skip
            assert answer.text == ANSWER and answer.tool_calls[0].name == "write_file"
        assert parts == [] and llm.refused_streams == 1  # refused once, then asked without streaming
        llm.assert_complete()


STORY = " ".join(f"word{n}" for n in range(40)) + " and that is the report."


async def test_a_streamed_answer_reaches_a_websocket_client_as_deltas_before_the_report(
    scripted_llm: ScriptedLLM, served: ServedHub
) -> None:
    scripted_llm.script("[stream]", [Reply(text=STORY, chunk_delay_s=0.03)])
    async with served.events(since=None) as events, served.client() as http:
        created = await http.post("/api/agents", json={"task": "[stream] tell it", "model": MODEL})
        assert created.status_code == 201, created.text
        agent_id = created.json()["id"]
        arrived: list[tuple[float, dict[str, Any]]] = []
        while True:
            event = await events.until(lambda e: e["agent_id"] == agent_id)
            arrived.append((time.monotonic(), event))
            if event["type"] == "agent.report":
                break

    kinds = [e["type"] for _, e in arrived]
    deltas = [(at, e) for at, e in arrived if e["type"] == "model.delta"]
    assert len(deltas) >= 3, kinds
    assert deltas[-1][0] - deltas[0][0] > 0.3, "the deltas came over the answer's duration, not at once"
    assert all(e["data"]["step"] == 1 and e["data"]["tool"] is None for _, e in deltas)
    spread = deltas[-1][1]["at"] - deltas[0][1]["at"]
    assert len(deltas) <= spread / 0.05 + 3 < len(STORY.split()), "coalesced: not one per word"
    assert "".join(e["data"]["text"] for _, e in deltas) == STORY
    step = next(i for i, kind in enumerate(kinds) if kind == "agent.step")
    assert kinds.index("model.delta") < step and kinds[step - 1] == "model.delta"  # the step replaces them
    assert arrived[step][1]["data"]["text"] == STORY
    numbered = [e["seq"] for _, e in arrived if e["type"] != "model.delta"]
    assert all(e["seq"] <= arrived[step][1]["seq"] for _, e in deltas)  # they take no number of their own

    async with served.events(since=0) as replayed:  # never journaled: a replay has none
        seen = await replayed.until(lambda e: e["type"] == "agent.report" and e["agent_id"] == agent_id)
    assert "model.delta" not in [e["type"] for e in replayed.seen] and seen["seq"] == numbered[-1]


async def test_a_websocket_client_that_asks_for_stored_kinds_only_makes_nothing_stream(
    scripted_llm: ScriptedLLM, served: ServedHub
) -> None:
    scripted_llm.script("[quiet]", [Reply(text=STORY, chunk_delay_s=0.03)])
    async with served.events(since=None, live=False) as events, served.client() as http:
        created = await http.post("/api/agents", json={"task": "[quiet] tell it", "model": MODEL})
        assert created.status_code == 201, created.text
        agent_id = created.json()["id"]
        report = await events.until(lambda e: e["type"] == "agent.report" and e["agent_id"] == agent_id)

    assert report["data"]["report"] == STORY
    assert not [e for e in events.seen if e["type"] in ("model.delta", "tool.output")]
    (request,) = scripted_llm.requests_for("[quiet]")
    assert not request.body.get("stream"), "nobody listened for deltas: the call was not streamed"


async def test_an_agent_streams_its_answer_and_tool_arguments_only_while_someone_listens(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    model = ScriptedModel()
    listed = Reply(text="Let me look first.", tool_calls=[call("list_dir", path=".")], chunk_delay_s=0.06)
    model.script("[watched]", [listed, Reply(text=STORY, chunk_delay_s=0.01)])
    model.script("[unwatched]", [Reply(text="nobody sees this being written", chunk_delay_s=0.01)])
    with model:
        async with Hub.open(root, data, model=model) as hub:
            unwatched = await hub.start("[unwatched] go", model=MODEL)
            await hub.wait_finished(unwatched.id)
            async with hub.follow_events(ephemeral=True) as events:
                top = await hub.start("[watched] go", model=MODEL)
                seen: list[Event] = []
                with anyio.fail_after(60):
                    async for event in events:
                        seen += [event] if event.agent_id == top.id else []
                        if isinstance(event.data, AgentReported) and event.agent_id == top.id:
                            break

    assert [r.body.get("stream") for r in model.requests] == [None, True, True]
    deltas = [e.data for e in seen if isinstance(e.data, ModelDelta)]
    first = [d for d in deltas if d.step == 1]
    assert "".join(d.text for d in first if d.tool is None) == "Let me look first."
    assert json.loads("".join(d.text for d in first if d.tool == "list_dir")) == {"path": "."}
    assert "".join(d.text for d in deltas if d.step == 2) == STORY
    kinds = [e.type for e in seen]
    steps = [i for i, kind in enumerate(kinds) if kind == "agent.step"]
    assert kinds.index("model.delta") < steps[0] and "model.delta" in kinds[steps[0] : steps[1]]


COMMAND = "echo first line; sleep 1; echo second line >&2; sleep 0.5; echo third line"


@needs_bwrap
async def test_a_running_commands_output_comes_as_tool_output_before_its_result(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    model = ScriptedModel()
    model.script("[shell]", [Reply(tool_calls=[call("run", command=COMMAND)]), Reply(text="ran it")])
    with model:
        async with Hub.open(root, data, model=model) as hub, hub.follow_events(ephemeral=True) as events:
            top = await hub.start("[shell] run the slow command", model=MODEL)
            arrived: list[tuple[float, Event]] = []
            with anyio.fail_after(60):
                async for event in events:
                    if event.agent_id == top.id:
                        arrived.append((time.monotonic(), event))
                    if isinstance(event.data, AgentReported) and event.agent_id == top.id:
                        break
            replayed = [e async for e in _stored(hub)]

    outputs = [(at, e.data) for at, e in arrived if isinstance(e.data, ToolOutput)]
    result_at, result = next((at, e.data) for at, e in arrived if isinstance(e.data, ToolReturned))
    assert len(outputs) >= 2, [e.type for _, e in arrived]
    assert all(at < result_at for at, _ in outputs), "the output came while the command ran, before its result"
    assert outputs[0][0] < result_at - 1.0, "the first line came before the command slept"
    assert {o.call_id for _, o in outputs} == {result.call_id} and {o.name for _, o in outputs} == {"run"}
    streamed = "".join(o.text for _, o in outputs)
    assert streamed.index("first line") < streamed.index("second line") < streamed.index("third line")
    assert "exit code: 0" in result.text and "--- stdout ---\nfirst line\nthird line" in result.text  # unchanged
    assert "second line" in result.text and not any(isinstance(e.data, ToolOutput) for e in replayed)


async def _stored(hub: Hub) -> AsyncIterator[Event]:
    """Every event the store holds, replayed."""
    async with hub.follow_events(0) as replay:
        async for event in replay:
            yield event
            if event.seq >= hub.last_event_id:
                return


def test_the_live_view_shows_the_latest_line_being_written_until_its_step_arrives(tmp_path: Path) -> None:
    view = LiveView(AgentTree(tmp_path, ScriptedModel()))
    seq = iter(range(1, 100))

    def feed(agent_id: str, data: EventData) -> None:
        view.feed(Event(seq=next(seq), at=time.time(), agent_id=agent_id, data=data))

    feed("a1", ModelDelta(step=1, text="Reading the module.\nNow the te", tool=None))
    feed("a1", ModelDelta(step=1, text="sts", tool=None))
    assert view.watched() == "a1 [a1] model ✎ Now the tests"
    feed("a2", ToolOutput(call_id="c1", name="run", text="collected 3 items\n"))
    assert view.watched() == "a2 [a2] run ✎ collected 3 items"  # the one written to last
    feed("a2", ToolReturned(call_id="c1", name="run", is_error=False, text="exit code: 0", seconds=1.0))
    assert view.watched() == "a1 [a1] model ✎ Now the tests"
    stepped = AgentStepped(index=1, text="done", tool_calls=[], tokens_in=1, tokens_out=1, cost_usd=0.0)
    feed("a1", stepped)
    assert view.watched() is None
