"""The scripted model server through real litellm: what an agent's model call will see."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import litellm
import pytest

from tests.fakes.scripted_llm import Fail, RecordedRequest, Reply, ScriptedLLM, ToolCall

pytestmark = pytest.mark.anyio
litellm.suppress_debug_info = True

MODEL = "openai/scripted"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    }
]


def user(task: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are an agent."}, {"role": "user", "content": task}]


async def ask(task: str, **kwargs: Any) -> Any:
    return await litellm.acompletion(model=MODEL, messages=user(task), tools=TOOLS, num_retries=0, **kwargs)


async def test_tool_calls_arrive_parsed_and_the_request_is_recorded(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script(
        "[agent]", [Reply(tool_calls=[ToolCall("read_file", {"path": "a.txt"}), ToolCall("read_file")])]
    )

    response = await ask("[agent] read a.txt")

    message = response.choices[0].message
    assert response.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("call_1", "read_file", {"path": "a.txt"}),
        ("call_2", "read_file", {}),
    ]
    (recorded,) = scripted_llm.requests_for("[agent]")
    assert recorded.model == "scripted"
    assert recorded.tool_names == ["read_file"]
    assert recorded.last_message == {"role": "user", "content": "[agent] read a.txt"}
    assert recorded.status == 200 and recorded.finished_at is not None
    assert recorded.started_at <= recorded.finished_at
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0


async def test_text_reply_with_given_usage(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script("[agent]", [Reply(text="all done", usage=(120, 7))])

    response = await ask("[agent] finish")

    assert response.choices[0].message.content == "all done"
    assert not response.choices[0].message.tool_calls
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (120, 7)


async def test_streaming_text_and_tool_calls_through_litellm(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script(
        "[streamer]",
        [Reply(text="the quick brown fox", usage=(50, 4)), Reply(tool_calls=[ToolCall("read_file", {"path": "x y"})])],
    )

    stream = await ask("[streamer] go", stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "the quick brown fox"
    text = litellm.stream_chunk_builder(chunks)
    assert text.choices[0].message.content == "the quick brown fox"
    assert (text.usage.prompt_tokens, text.usage.completion_tokens) == (50, 4)

    stream = await ask("[streamer] go", stream=True)
    calls = litellm.stream_chunk_builder([chunk async for chunk in stream]).choices[0].message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("read_file", {"path": "x y"})]
    assert all(r.body["stream"] for r in scripted_llm.requests)


async def test_function_step_decides_from_what_the_model_was_shown(scripted_llm: ScriptedLLM) -> None:
    async def echo_tool_result(request: RecordedRequest) -> Reply:
        results = [m["content"] for m in request.messages if m["role"] == "tool"]
        return Reply(text=f"the file says: {results[-1]}")

    scripted_llm.script("[reader]", [Reply(tool_calls=[ToolCall("read_file", {"path": "a"})]), echo_tool_result])
    messages = user("[reader] read a")
    first = await litellm.acompletion(model=MODEL, messages=messages, tools=TOOLS, num_retries=0)
    call = first.choices[0].message.tool_calls[0]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "hello from a"},
    ]

    second = await litellm.acompletion(model=MODEL, messages=messages, tools=TOOLS, num_retries=0)

    assert second.choices[0].message.content == "the file says: hello from a"
    assert scripted_llm.requests_for("[reader]")[1].last_message["tool_call_id"] == call.id


async def test_two_agents_delayed_requests_overlap(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script("[one]", [Reply(text="one", delay_s=0.5)])
    scripted_llm.script("[two]", [Reply(text="two", delay_s=0.5)])
    answers: dict[str, str] = {}

    async def run(tag: str) -> None:
        answers[tag] = (await ask(f"[{tag}] work")).choices[0].message.content

    started = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "one")
        tg.start_soon(run, "two")

    assert answers == {"one": "one", "two": "two"}
    assert anyio.current_time() - started < 0.95, "the delays ran one after the other"
    one, two = scripted_llm.requests_for("[one]")[0], scripted_llm.requests_for("[two]")[0]
    assert one.finished_at is not None and two.finished_at is not None
    assert max(one.started_at, two.started_at) < min(one.finished_at, two.finished_at)


async def test_fail_steps_arrive_as_litellm_errors(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script(
        "[unlucky]", [Fail.quota(), Fail.rate_limit(2), Fail.auth(), Fail.unavailable(), Reply(text="recovered")]
    )

    with pytest.raises(litellm.RateLimitError) as quota:
        await ask("[unlucky] try")
    assert quota.value.body["code"] == "insufficient_quota"
    with pytest.raises(litellm.RateLimitError) as limited:
        await ask("[unlucky] try")
    assert limited.value.body["code"] == "rate_limit_exceeded"
    assert limited.value.litellm_response_headers["retry-after"] == "2"  # .response is synthetic
    with pytest.raises(litellm.AuthenticationError):
        await ask("[unlucky] try")
    with pytest.raises(litellm.ServiceUnavailableError):
        await ask("[unlucky] try")
    assert (await ask("[unlucky] try")).choices[0].message.content == "recovered"
    assert [r.status for r in scripted_llm.requests] == [429, 429, 401, 503, 200], "litellm retried"


async def test_exhausted_or_unmatched_scripts_fail_loudly(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script("[short]", [Reply(text="only one")])
    scripted_llm.script("[agent", [], model="openai/other")
    await ask("[short] first")

    with pytest.raises(litellm.InternalServerError, match="exhausted after 1 steps"):
        await ask("[short] second")
    with pytest.raises(litellm.InternalServerError, match="no script matches"):
        await ask("[nobody] hello")
    scripted_llm.script("[agent]", [])
    scripted_llm.script("agent]", [])
    with pytest.raises(litellm.InternalServerError, match="all match"):
        await ask("[agent] hello")

    failures = scripted_llm.failures
    assert len(failures) == 3
    assert failures[0] == "script for '[short]' exhausted after 1 steps"
    assert [r.status for r in scripted_llm.requests] == [200, 500, 500, 500]
    with pytest.raises(AssertionError, match="unanswered: script for '\\[short\\]' exhausted after 1 steps"):
        scripted_llm.assert_complete()
    scripted_llm.clear_failures()
    scripted_llm.assert_complete()


def test_assert_complete_names_unused_steps_and_models_are_listed() -> None:
    with ScriptedLLM() as llm:
        llm.script("[lazy]", [Reply(text="used"), Fail.quota()], model="openai/gpt-x")
        response = httpx.post(
            f"{llm.base_url}/chat/completions",
            json={"model": "gpt-x", "messages": [{"role": "user", "content": "[lazy] go"}]},
        )
        assert response.json()["choices"][0]["message"]["content"] == "used"
        assert httpx.get(f"{llm.base_url}/models").json()["data"][0]["id"] == "gpt-x"
        with pytest.raises(AssertionError, match=r"'\[lazy\]': 1 of 2 steps unused, next Fail\(429\)"):
            llm.assert_complete()
        assert httpx.get(f"{llm.base_url}/embeddings").status_code == 404
        assert llm.failures == ["unexpected request GET /v1/embeddings"]


async def test_a_broken_function_step_is_a_recorded_failure(scripted_llm: ScriptedLLM) -> None:
    def broken(request: RecordedRequest) -> Reply:
        raise KeyError("no tool result")

    scripted_llm.script("[parts]", [broken])
    task = [{"type": "text", "text": "[parts] as content parts"}]

    with pytest.raises(litellm.InternalServerError, match="function step broken raised KeyError"):
        await litellm.acompletion(model=MODEL, messages=[{"role": "user", "content": task}], num_retries=0)

    assert scripted_llm.requests[0].task == "[parts] as content parts"
    assert len(scripted_llm.failures) == 1
    scripted_llm.clear_failures()
