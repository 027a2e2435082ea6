"""The shipped scripted model (``dispatch.hub.llm.scripted``) in process: a tree of agents runs on
it with no HTTP server and no model worker, and every surprise is loud, in words that say which
script and what was asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dispatch.hub.agents.spec import AgentState
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.errors import ConfigError, ModelCallError
from dispatch.hub.llm.scripted import (
    Fail,
    RecordedRequest,
    Reply,
    Script,
    ScriptedModel,
    ScriptError,
    ScriptNotFollowed,
    load_scripts,
)
from tests.agent_helpers import MODEL, assert_done, call, tool_messages, top_spec

pytestmark = pytest.mark.anyio
TOOLS = [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]


def asked(task: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are an agent."}, {"role": "user", "content": task}]


async def test_a_parent_summons_a_child_that_writes_a_file_with_no_server_or_worker(tmp_path: Path) -> None:
    def report(request: RecordedRequest) -> Reply:
        return Reply(text="The child reported: " + tool_messages(request.messages)[-1])

    summon = call("summon", task="[writer] write notes.md", scope=["notes.md"], name="writer", wait=True)
    model = ScriptedModel(
        [
            Script(match="[lead]", steps=[Reply(tool_calls=[summon]), report]),
            Script(
                match="[writer]",
                steps=[
                    Reply(tool_calls=[call("write_file", path="notes.md", content="# Notes\n")]),
                    Reply(text="wrote notes.md", usage=(120, 8)),
                ],
            ),
        ]
    )

    with model:  # leaving checks that every step was used and every request answered
        async with AgentTree(tmp_path, model) as tree:
            top = await tree.run(top_spec("[lead] get the notes written"))

    assert_done(top)
    (child,) = tree.children_of(top.id)
    assert_done(child)
    assert (tmp_path / "notes.md").read_text() == "# Notes\n"
    assert "wrote notes.md" in (top.report or "")
    assert [r.agent_id for r in model.requests_for("[writer]")] == [child.id, child.id]
    assert [r.status for r in model.requests] == [200, 200, 200, 200]
    assert child.usage.prompt_tokens > 120 and child.usage.completion_tokens > 8  # the step's figures count
    assert child.usage.calls == 2 and child.usage.cost_usd == 0
    written = model.requests_for("[writer]")[1].messages
    assert any("notes.md" in text for text in tool_messages(written)), "the write's result reached the model"


async def test_a_reply_becomes_a_completion_with_ids_arguments_and_usage() -> None:
    model = ScriptedModel()
    model.script("[one]", [Reply(tool_calls=[call("read_file", path="a.txt"), call("read_file")])])
    model.script("[two]", [Reply(text="hello", usage=(7, 3))], model="openai/other")

    first = await model.complete(MODEL, asked("[one] read"), TOOLS, agent_id="a1")
    second = await model.complete("openai/other", asked("[two] greet"), [])

    assert [(c.id, c.name, json.loads(c.arguments)) for c in first.tool_calls] == [
        ("call_1", "read_file", {"path": "a.txt"}),
        ("call_2", "read_file", {}),
    ]
    assert first.text is None and first.model == MODEL and first.usage.prompt_tokens > 0
    assert (second.text, second.usage.prompt_tokens, second.usage.completion_tokens) == ("hello", 7, 3)
    assert second.usage.cost_usd == 0 and second.usage.calls == 1
    assert model.requests[0].tool_names == ["read_file"] and model.requests[0].agent_id == "a1"
    model.assert_complete()


async def test_a_request_no_script_matches_says_what_was_asked() -> None:
    model = ScriptedModel([Script(match="[known]", steps=[Reply(text="hi")])])

    with pytest.raises(ScriptError) as refused:
        await model.complete(MODEL, asked("[stranger] hello"), [])

    assert str(refused.value) == (
        "request 0: no script matches model 'openai/scripted', first user message '[stranger] hello'"
    )
    assert isinstance(refused.value, ModelCallError)  # an agent fails with this message, no traceback
    with pytest.raises(ScriptNotFollowed) as unfinished:
        model.assert_complete()
    assert str(unfinished.value) == (
        "scripted model steps left unused or requests unanswered:\n"
        "unanswered: request 0: no script matches model 'openai/scripted', first user message '[stranger] hello'\n"
        "script '[known]': 1 of 1 steps unused, next Reply(text='hi', tool_calls=[])"
    )


async def test_a_request_two_scripts_match_names_both() -> None:
    model = ScriptedModel([Script(match="[job]", steps=[]), Script(match="job]", steps=[])])

    with pytest.raises(ScriptError, match=r"request 0: scripts \['\[job\]', 'job\]'\] all match model"):
        await model.complete(MODEL, asked("[job] do it"), [])
    assert len(model.failures) == 1


async def test_a_used_up_script_says_after_how_many_steps() -> None:
    model = ScriptedModel([Script(match="[short]", steps=[Reply(text="only one")])])
    await model.complete(MODEL, asked("[short] first"), [])

    with pytest.raises(ScriptError, match=r"^script for '\[short\]' exhausted after 1 steps$"):
        await model.complete(MODEL, asked("[short] again"), [])
    assert model.failures == ["script for '[short]' exhausted after 1 steps"]


async def test_an_agent_on_an_unmatched_request_fails_naming_it(tmp_path: Path) -> None:
    model = ScriptedModel()

    async with AgentTree(tmp_path, model) as tree:
        agent = await tree.run(top_spec("[unscripted] anything"))

    assert agent.state is AgentState.failed
    assert (
        agent.error
        == "request 0: no script matches model 'openai/scripted', first user message '[unscripted] anything'"
    )
    with pytest.raises(ScriptNotFollowed, match="unanswered: request 0: no script matches"):
        model.assert_complete()


async def test_leaving_the_block_with_steps_unused_names_them() -> None:
    with (
        pytest.raises(ScriptNotFollowed, match=r"script '\[lazy\]': 2 of 3 steps unused, next Fail\(429\)"),
        ScriptedModel([Script(match="[lazy]", steps=[Reply(text="used"), Fail.quota(), Reply(text="never")])]) as model,
    ):
        await model.complete(MODEL, asked("[lazy] go"), [])


async def test_a_failure_step_fails_the_call_with_the_providers_message() -> None:
    model = ScriptedModel([Script(match="[busy]", steps=[Fail.rate_limit(2), Fail(400, {"detail": "odd"})])])

    with pytest.raises(ModelCallError) as limited:
        await model.complete(MODEL, asked("[busy] go"), [])
    with pytest.raises(ModelCallError) as odd:
        await model.complete(MODEL, asked("[busy] again"), [])

    assert (
        str(limited.value)
        == "openai/scripted: the scripted model answered 429: Rate limit reached. Please try again in 2s."
    )
    assert str(odd.value) == 'openai/scripted: the scripted model answered 400: {"detail": "odd"}'
    assert [r.status for r in model.requests] == [429, 400]
    model.assert_complete()


async def test_function_steps_decide_from_the_request_and_their_errors_are_the_calls() -> None:
    async def echo(request: RecordedRequest) -> Reply:
        return Reply(text=f"you said {request.last_message['content']!r}")

    def broken(request: RecordedRequest) -> Reply:
        raise RuntimeError("the model client broke")

    def confused(request: RecordedRequest) -> str:
        return "not a reply"

    model = ScriptedModel([Script(match="[fn]", steps=[echo, broken, confused])])

    assert (await model.complete(MODEL, asked("[fn] ping"), [])).text == "you said '[fn] ping'"
    with pytest.raises(RuntimeError, match="the model client broke"):
        await model.complete(MODEL, asked("[fn] ping"), [])
    with pytest.raises(ScriptError, match=r"function step confused returned 'not a reply', not Reply/Fail"):
        await model.complete(MODEL, asked("[fn] ping"), [])
    assert len(model.failures) == 1  # a raising step is its answer; a wrong return is the script's fault


def test_a_script_file_loads_and_its_mistakes_name_entry_step_and_field(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "- match: '[top]'\n"
        "  model: openai/scripted\n"
        "  steps:\n"
        "    - tool_calls: [{name: read_file, arguments: {path: a.txt}}]\n"
        "    - {text: done, delay_s: 0.1}\n"
        "    - {fail: 503, body: {error: {message: busy}}}\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "- match: '[top]'\n"
        "  steps:\n"
        "    - {text: hi, colour: red}\n"
        "    - tool_calls: [{arguments: {}}]\n"
        "    - {fail: 200}\n"
        "    - {}\n"
        "- {match: '[other]', step: []}\n"
    )

    (script,) = load_scripts(good)
    assert script.model == "openai/scripted" and len(script.steps) == 3
    assert script.steps[2] == Fail(503, {"error": {"message": "busy"}})
    assert ScriptedModel.from_file(good).scripts == [script]
    with pytest.raises(ConfigError) as wrong:
        load_scripts(bad)
    assert str(wrong.value).splitlines() == [
        f"{bad}: entry 1, step 1: colour: Unexpected keyword argument",
        f"{bad}: entry 1, step 2: tool_calls.0.name: Field required",
        f"{bad}: entry 1, step 3: fail: Input should be greater than or equal to 400",
        f"{bad}: entry 1, step 4: a reply has text and/or tool_calls",
        f"{bad}: entry 2: steps: Field required",
        f"{bad}: entry 2: step: Extra inputs are not permitted",
    ]
    (tmp_path / "map.yaml").write_text("match: x\n")
    with pytest.raises(ConfigError, match=r"map.yaml: expected a list of \{match, steps\} entries, got dict"):
        load_scripts(tmp_path / "map.yaml")
