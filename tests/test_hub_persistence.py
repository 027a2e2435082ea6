"""The hub's state on disk: agents, transcripts, messages and events survive a close and reopen;
event ids continue; ``follow_events(since)`` replays without gap or duplicate and goes on live;
artifacts one agent saves are found by a later one. Real SQLite in temp dirs, the scripted model,
real MCP sessions."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from dispatch.hub.errors import NotFoundError, UnknownAgentError, UserError
from dispatch.hub.events import Event, MessageDelivered, MessageSent, SkillLoaded
from dispatch.hub.service.hub import Hub
from dispatch.hub.store.db import DB_NAME, Store
from dispatch.servers.hublink import MessageKind
from tests.agent_helpers import call, tool_messages, until
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM
from tests.hub_helpers import MODEL, dirs

pytestmark = pytest.mark.anyio


async def test_agents_transcripts_messages_and_events_survive_a_reopen(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    root, data = dirs(tmp_path)
    scripted_llm.script(
        "[keep-top]",
        [
            Reply(tool_calls=[call("summon", task="[keep-child] write notes", scope=["notes.md"], wait=True)]),
            Reply(tool_calls=[call("report_progress", text="child reported")], delay_s=0.5),
            Reply(text="top report"),
        ],
    )
    scripted_llm.script(
        "[keep-child]",
        [Reply(tool_calls=[call("write_file", path="notes.md", content="n\n")]), Reply(text="child report")],
    )

    async with Hub.open(root, data) as hub:
        top = await hub.start("[keep-top] delegate", model=MODEL)
        await until(lambda: len(scripted_llm.requests_for("[keep-top]")) == 2)
        message_id = await hub.send(top.id, "Mind the tests.", MessageKind.context)
        done = await hub.wait_finished(top.id)
        before = {v.id: v for v in (await hub.agents())}
        transcripts = {i: (await hub.agent(i)).transcript for i in before}
        last = hub.last_event_id

    assert done.state == "done" and done.report == "top report"
    assert "Mind the tests." in str(scripted_llm.requests_for("[keep-top]")[2].messages[-1]["content"])
    async with Hub.open(root, data) as hub:
        after = {v.id: v for v in (await hub.agents())}
        assert after.keys() == before.keys()
        for agent_id, view in before.items():
            assert after[agent_id].model_dump() == view.model_dump()
            detail = await hub.agent(agent_id)
            assert detail.transcript == transcripts[agent_id]
        child = next(v for v in after.values() if v.parent_id == top.id)
        assert child.report == "child report" and child.scope == ["notes.md"] and child.state == "done"
        assert (await hub.agent(top.id)).progress == ["child reported"]
        replayed = await _replay(hub, 0, last)
        assert [e.seq for e in replayed] == list(range(1, last + 1))
        sent = next(e.data for e in replayed if isinstance(e.data, MessageSent) and e.data.message_id == message_id)
        assert sent.text == "Mind the tests."
        assert any(isinstance(e.data, MessageDelivered) and e.data.message_id == message_id for e in replayed)
        with pytest.raises(UserError, match="has finished"):
            await hub.send(top.id, "too late", MessageKind.instruction)
        with pytest.raises(UnknownAgentError):
            await hub.agent("a-nosuch00")
    async with Store.open(data / DB_NAME) as store:
        assert {"m002_agents", "m005_events", "m006_artifacts"} <= set(store.applied_migrations())


async def _replay(hub: Hub, since: int, until_seq: int) -> list[Event]:
    seen: list[Event] = []
    with anyio.fail_after(10):
        async with hub.follow_events(since) as events:
            async for event in events:
                seen.append(event)
                if event.seq >= until_seq:
                    break
    return seen


async def test_follow_events_replays_from_since_then_streams_live_without_gap(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    root, data = dirs(tmp_path)
    scripted_llm.script("[first-run]", [Reply(tool_calls=[call("list_dir", path=".")]), Reply(text="one")])
    slow = [Reply(tool_calls=[call("list_dir", path=".")], delay_s=0.05) for _ in range(6)]
    scripted_llm.script("[second-run]", [*slow, Reply(text="two")])

    async with Hub.open(root, data) as hub:
        first = await hub.start("[first-run] go", model=MODEL)
        await hub.wait_finished(first.id)
        middle = hub.last_event_id

    async with Hub.open(root, data) as hub:
        second = await hub.start("[second-run] go", model=MODEL)
        seen: list[Event] = []
        with anyio.fail_after(30):
            async with hub.follow_events(middle - 3) as events:
                async for event in events:  # the replay overlaps with events committed meanwhile
                    seen.append(event)
                    if event.type == "agent.report" and event.agent_id == second.id:
                        break
        late: list[Event] = []
        with anyio.fail_after(10):
            async with hub.follow_events() as events:  # None: from now on only
                hub.tree.events.publish(second.id, SkillLoaded(skill="ping"))
                async for event in events:
                    late.append(event)
                    break

    seqs = [e.seq for e in seen]
    assert seqs == list(range(middle - 2, seqs[-1] + 1)), "a gap or a duplicate"
    assert seqs[0] <= middle < seqs[-1]
    assert any(e.agent_id == first.id for e in seen) and any(e.agent_id == second.id for e in seen)
    assert [e.data for e in late] == [SkillLoaded(skill="ping")] and late[0].seq > seqs[-1]


async def test_artifacts_saved_by_one_agent_are_found_by_a_later_one(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    plan = "Plan: migrate the billing module to the ledger API, then remove the legacy invoices table."
    scripted_llm.script(
        "[planner-run]",
        [
            Reply(tool_calls=[call("save_artifact", kind="plan", title="Billing migration", content=plan)]),
            Reply(tool_calls=[call("save_artifact", kind="research", title="Queue options", content="Use Redis.")]),
            Reply(text="saved"),
        ],
    )

    def read_found(request: RecordedRequest) -> Reply:
        found = tool_messages(request.messages)[-1]
        artifact_id = found.split('"id": "')[1].split('"')[0]
        return Reply(tool_calls=[call("read_artifact", id=artifact_id)])

    scripted_llm.script(
        "[coder-run]",
        [
            Reply(tool_calls=[call("find_artifacts", query="legacy invoices ledger", kind="plan")]),
            read_found,
            Reply(text="read it"),
        ],
    )

    async with Hub.open(root, data) as hub:
        planner = await hub.start("[planner-run] plan billing", model=MODEL)
        await hub.wait_finished(planner.id)
    async with Hub.open(root, data) as hub:
        coder = await hub.start("[coder-run] implement the plan", model=MODEL)
        await hub.wait_finished(coder.id)
        listed = await hub.artifacts(query="billing")
        by_kind = await hub.artifacts(kind="research")
        everything = await hub.artifacts()
        full = await hub.artifact(listed[0].id)
        with pytest.raises(NotFoundError):
            await hub.artifact("art-nosuch00")
        nothing = await hub.artifacts(query='"unbalanced AND (quotes')

    found, read = tool_messages(scripted_llm.requests_for("[coder-run]")[2].messages)
    assert "Billing migration" in found and "Queue options" not in found
    assert plan in read
    assert [a.title for a in listed] == ["Billing migration"] and listed[0].content is None
    assert listed[0].agent_id == planner.id
    assert [a.title for a in by_kind] == ["Queue options"]
    assert [a.title for a in everything] == ["Queue options", "Billing migration"]  # newest first
    assert full.content == plan and full.kind == "plan"
    assert nothing == []


async def test_stored_agents_answer_model_switch_cancel_and_messages(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    scripted_llm.script("[gated]", [Reply(tool_calls=[call("list_dir", path=".")], delay_s=3)])

    async with Hub.open(root, data) as hub:
        agent = await hub.start("[gated] wait for the model", model=MODEL)
        await until(lambda: len(scripted_llm.requests_for("[gated]")) == 1)
    # leaving the context stopped the hub: what ran is interrupted, resumable
    async with Hub.open(root, data) as hub:
        (view,) = await hub.agents()
        assert view.state == "interrupted" and view.id == agent.id
        message_id = await hub.send(agent.id, "When you resume: use the docs.", MessageKind.instruction)
        await hub.switch_model(agent.id, "openai/other")
        assert hub.view(agent.id).model == "openai/other"
        cancelled = await hub.cancel(agent.id)
        assert cancelled.state == "cancelled"
        with pytest.raises(UserError, match="only an interrupted agent"):
            await hub.resume(agent.id)
    async with Store.open(data / DB_NAME) as store:
        rows = list(store.db.query("select text, delivered_step from messages where id = ?", [message_id]))
    assert rows == [{"text": "When you resume: use the docs.", "delivered_step": None}]


async def test_an_agent_resumes_in_its_own_project_from_a_hub_started_in_another(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    root, data = dirs(tmp_path)
    other = tmp_path / "other-project"
    other.mkdir()
    scripted_llm.script(
        "[elsewhere]",
        [
            Reply(text="lost with the hub", delay_s=3),
            Reply(tool_calls=[call("write_file", path="resumed.txt", content="here")]),
            Reply(text="finished where it began"),
        ],
    )
    async with Hub.open(root, data) as hub:
        agent = await hub.start("[elsewhere] work", model=MODEL)
        await until(lambda: len(scripted_llm.requests_for("[elsewhere]")) == 1)
    async with Hub.open(other, data) as hub:
        assert hub.view(agent.id).state == "interrupted"
        await hub.resume(agent.id)
        done = await hub.wait_finished(agent.id)
    assert done.state == "done" and done.root == str(root.resolve())
    assert (root / "resumed.txt").read_text() == "here" and not (other / "resumed.txt").exists()


async def test_a_chats_interrupted_dispatch_agent_resumes_and_answers_the_chat(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    root, data = dirs(tmp_path)
    scripted_llm.script(
        "[chat-q]",
        [
            Reply(tool_calls=[call("list_dir", path=".")]),
            Reply(text="lost with the hub", delay_s=3),
            Reply(text="the answer, after a resume"),
        ],
    )
    async with Hub.open(root, data, default_model=MODEL) as hub:
        chat = await hub.create_chat("questions")
        await hub.post_chat_message(chat.id, "[chat-q] what is here?")
        await until(lambda: len(scripted_llm.requests_for("[chat-q]")) == 2)
        (agent,) = await hub.agents()
        assert agent.chat_id == chat.id
    async with Hub.open(root, data, default_model=MODEL) as hub:
        (stored,) = await hub.agents()
        assert (stored.state, stored.chat_id, stored.steps) == ("interrupted", chat.id, 1)
        await hub.resume(agent.id)
        await hub.wait_finished(agent.id)
        with anyio.fail_after(10):
            while len((await hub.chat(chat.id)).messages) < 2:
                await anyio.sleep(0.05)
        messages = (await hub.chat(chat.id)).messages
    assert [(m.role, m.text) for m in messages] == [
        ("user", "[chat-q] what is here?"),
        ("assistant", "the answer, after a resume"),
    ]
