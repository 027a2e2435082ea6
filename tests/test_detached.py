"""Detached agents: a child summoned with detached=true gets a user thread; its ask_user waits
(waiting_user) while its siblings go on; the user's answer through the thread API reaches it; it
reports to its parent as usual; the thread is kept for a later hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch.hub.agents.loop import Agent
from dispatch.hub.agents.spec import AgentState
from dispatch.hub.errors import NotFoundError, UserError
from dispatch.hub.service.threads import ThreadDetail
from tests.agent_helpers import assert_done, call, tool_messages, top_spec, until
from tests.chat_helpers import Parts, eventually, running_hub
from tests.fakes.scripted_llm import Reply, ScriptedLLM

pytestmark = pytest.mark.anyio


def _child(parts: Parts, top: Agent, name: str) -> Agent:
    return next(c for c in parts.tree.children_of(top.id) if c.spec.name == name)


async def _asked(parts: Parts, agent_id: str) -> ThreadDetail:
    found: list[ThreadDetail] = []

    async def has_question() -> bool:
        found[:] = [await parts.chats.thread(agent_id)]
        return found[0].question is not None

    await eventually(has_question)
    return found[0]


async def test_a_detached_child_asks_waits_gets_the_answer_and_reports(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    scripted_llm.script(
        "[lead]",
        [
            Reply(
                tool_calls=[
                    call("summon", task="[asker] pick a colour", name="asker", detached=True),
                    call("summon", task="[worker] count files", name="worker"),
                ]
            ),
            Reply(tool_calls=[call("wait")]),
            lambda r: Reply(text=f"lead got: {tool_messages(r.messages)[-1]}"),
        ],
    )
    scripted_llm.script(
        "[asker]",
        [
            Reply(tool_calls=[call("ask_user", question="Which colour?")]),
            lambda r: Reply(text=f"colour chosen: {tool_messages(r.messages)[-1].splitlines()[-1]}"),
        ],
    )
    scripted_llm.script("[worker]", [Reply(text="counted 3 files")])
    db = tmp_path / "dispatch.db"
    async with running_hub(tmp_path / "project", db) as parts:
        top = parts.tree.start(top_spec("[lead] delegate"))
        await until(lambda: len(parts.tree.children_of(top.id)) == 2)
        asker, worker = _child(parts, top, "asker"), _child(parts, top, "worker")
        asked = await _asked(parts, asker.id)
        await worker.finished.wait()
        await until(lambda: top.reason == "waiting for 1 children")  # its `wait` call counts the asker only
        meanwhile = (asker.state, asker.reason, top.state, top.reason)
        answer = await parts.chats.answer_thread(asker.id, "Blue")
        await top.finished.wait()
        thread = await parts.chats.thread(asker.id)
        listed = await parts.chats.threads_list()

    assert (asked.question, asked.state, asked.task) == ("Which colour?", "waiting_user", "[asker] pick a colour")
    assert meanwhile == (
        AgentState.waiting_user,
        "waiting for you: Which colour?",
        AgentState.waiting_children,
        "waiting for 1 children",
    )
    assert_done(worker)
    assert_done(asker)
    assert asker.report == "colour chosen: Blue"
    assert_done(top)
    assert "colour chosen: Blue" in (top.report or "") and "counted 3 files" in (top.report or "")
    assert [(m.role, m.text) for m in thread.messages] == [("agent", "Which colour?"), ("user", "Blue")]
    assert thread.messages[1] == answer and answer.message_id is not None
    assert thread.question is None and thread.state == "done" and thread.parent_id == top.id
    assert [t.agent_id for t in listed] == [asker.id], "only detached agents have threads"
    reply = tool_messages(scripted_llm.requests_for("[asker]")[1].messages)[-1]
    assert reply == f"[instruction from the user · message {answer.message_id}]\nBlue"

    async with running_hub(tmp_path / "project", db) as later:  # the thread outlives the hub run
        kept = await later.chats.thread(asker.id)
        with pytest.raises(UserError, match="is not running in this hub"):
            await later.chats.answer_thread(asker.id, "too late")
    assert kept.messages == thread.messages and kept.state is None


async def test_answers_to_agents_without_a_thread_or_finished_are_refused(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    scripted_llm.script("[solo]", [Reply(text="done")])
    scripted_llm.script("[alone]", [Reply(text="done too")])
    async with running_hub(tmp_path / "project", tmp_path / "dispatch.db") as parts:
        plain = await parts.tree.run(top_spec("[solo] work"))
        detached = await parts.tree.run(top_spec("[alone] work", detached=True))
        await eventually(lambda: _has_thread(parts, detached.id))
        with pytest.raises(NotFoundError, match="has no user thread"):
            await parts.chats.answer_thread(plain.id, "hello")
        with pytest.raises(NotFoundError, match="has no user thread"):
            await parts.chats.thread("a-nope")
        with pytest.raises(UserError, match="has finished"):
            await parts.chats.answer_thread(detached.id, "hello")
        with pytest.raises(UserError, match="needs some text"):
            await parts.chats.answer_thread(detached.id, "  ")


async def _has_thread(parts: Parts, agent_id: str) -> bool:
    return any(t.agent_id == agent_id for t in await parts.chats.threads_list())
