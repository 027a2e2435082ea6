"""Streaming: a model's answer reaches the hub's listeners as it is written (``model.delta``,
coalesced, never journaled) and a running command's output as it is printed (``tool.output``),
while what is stored, the answer's usage and the tool's result stay as they were."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from dispatch.hub.llm.litellm_call import acompletion, load_litellm
from dispatch.hub.llm.scripted import Reply, ToolCall
from dispatch.hub.llm.types import Completion, JsonDict
from tests.api_helpers import MODEL, ServedHub
from tests.fakes.scripted_llm import ScriptedLLM

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
    assert "".join(e["data"]["text"] for _, e in deltas) == STORY
    step = next(i for i, kind in enumerate(kinds) if kind == "agent.step")
    assert kinds.index("model.delta") < step and kinds[step - 1] == "model.delta"  # the step replaces them
    assert arrived[step][1]["data"]["text"] == STORY
    numbered = [e["seq"] for _, e in arrived if e["type"] != "model.delta"]
    assert all(e["seq"] <= arrived[step][1]["seq"] for _, e in deltas)  # they take no number of their own

    async with served.events(since=0) as replayed:  # never journaled: a replay has none
        seen = await replayed.until(lambda e: e["type"] == "agent.report" and e["agent_id"] == agent_id)
    assert "model.delta" not in [e["type"] for e in replayed.seen] and seen["seq"] == numbered[-1]
