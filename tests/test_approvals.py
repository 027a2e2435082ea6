"""Approvals: path permission prompts (once, session, always, auto_allow) driven through TreeLink,
and checkpoints (before_report, before_write, before_destructive) enforced by the hub on real agents."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

import anyio
import pytest
import yaml

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.agents.link import TreeLink
from dispatch.hub.agents.spec import AgentState
from dispatch.hub.config.project import load_config
from dispatch.hub.errors import NotFoundError, UserError
from dispatch.hub.events import ApprovalRequested, ApprovalResolved
from dispatch.servers.hublink import AccessDecision, MessageKind, Operation
from tests.agent_helpers import assert_done, call, last_tool_json, tool_messages, top_spec
from tests.chat_helpers import Parts, idle_agent, pending, running_hub
from tests.fakes.scripted_llm import Reply, ScriptedLLM

pytestmark = pytest.mark.anyio


async def _request(parts: Parts, agent_id: str, path: Path, operation: Operation = "read") -> AccessDecision:
    return await TreeLink(parts.tree, parts.tree.agents[agent_id]).request_access(str(path), operation, "to compare")


async def test_path_outside_the_root_raises_an_approval_naming_the_chain(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "notes.txt"
    decisions: list[AccessDecision] = []
    async with running_hub(tmp_path / "project", tmp_path / "dispatch.db") as parts:
        top = idle_agent(parts.tree, "top")
        child = idle_agent(parts.tree, "researcher", parent=top)
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: _collect(decisions, _request(parts, child.id, outside)))
            [asked] = await pending(parts)
            waiting = (child.state, child.reason)
            answered = await parts.approvals.answer_approval(asked.id, "approve", "once")
        async with anyio.create_task_group() as group:  # once: the same request is asked again
            group.start_soon(lambda: _collect(decisions, _request(parts, child.id, outside)))
            [again] = await pending(parts)
            await parts.approvals.answer_approval(again.id, "deny", "once")
        approvals = [e for e in parts.events if isinstance(e.data, ApprovalRequested | ApprovalResolved)]
        events = [(e.type, e.data.approval_id) for e in approvals]

    assert (asked.kind, asked.chain, asked.path, asked.operation) == (
        "path",
        ["top", "researcher"],
        str(outside),
        "read",
    )
    assert (asked.agent_id, asked.content, asked.state, asked.checkpoint) == (
        child.id,
        "to compare [asked by top › researcher]",
        "pending",
        None,
    )
    assert waiting == (AgentState.waiting_user, f"waiting for your approval: read {outside}")
    assert answered.state == "approved" and child.state is AgentState.running
    assert decisions[0].granted and decisions[0].reason == f"granted by the user (approval {asked.id})"
    assert not decisions[1].granted and decisions[1].reason == f"denied by the user (approval {again.id})"
    assert events == [
        ("approval.requested", asked.id),
        ("approval.resolved", asked.id),
        ("approval.requested", again.id),
        ("approval.resolved", again.id),
    ]


async def _collect(into: list[AccessDecision], request: Awaitable[AccessDecision]) -> None:
    into.append(await request)


async def test_a_session_grant_is_not_asked_again_in_the_same_agent_tree(tmp_path: Path) -> None:
    outside = tmp_path / "shared-data"
    decisions: list[AccessDecision] = []
    async with running_hub(tmp_path / "project", tmp_path / "dispatch.db") as parts:
        top = idle_agent(parts.tree, "top")
        child = idle_agent(parts.tree, "child", parent=top)
        grandchild = idle_agent(parts.tree, "grandchild", parent=child)
        other_top = idle_agent(parts.tree, "another-top")
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: _collect(decisions, _request(parts, child.id, outside)))
            [asked] = await pending(parts)
            await parts.approvals.answer_approval(asked.id, "approve", "session")
        beneath = await _request(parts, grandchild.id, outside / "a" / "b.csv")
        same = await _request(parts, top.id, outside)
        asked_after = await parts.approvals.approvals("pending")
        async with anyio.create_task_group() as group:  # another agent tree, or another operation: asked
            group.start_soon(lambda: _collect(decisions, _request(parts, other_top.id, outside)))
            group.start_soon(lambda: _collect(decisions, _request(parts, grandchild.id, outside, "write")))
            for approval in await pending(parts, 2):
                await parts.approvals.answer_approval(approval.id, "deny", "once")
        everything = await parts.approvals.approvals(None)

    assert decisions[0].granted and beneath.granted and same.granted
    assert beneath.remember == "session" and "this session" in beneath.reason
    assert asked_after == []
    assert len(everything) == 3 and sorted(a.chain[-1] for a in everything[1:]) == ["another-top", "grandchild"]


async def test_a_session_write_grant_covers_reading_and_a_denial_only_its_own_operation(tmp_path: Path) -> None:
    shared, private = tmp_path / "shared", tmp_path / "private"
    async with running_hub(tmp_path / "project", tmp_path / "dispatch.db") as parts:
        top = idle_agent(parts.tree, "top")
        child = idle_agent(parts.tree, "child", parent=top)
        async with anyio.create_task_group() as group:
            group.start_soon(_request, parts, top.id, shared, "write")
            group.start_soon(_request, parts, top.id, private, "read")
            for approval in await pending(parts, 2):
                decision = "approve" if approval.path == str(shared) else "deny"
                await parts.approvals.answer_approval(approval.id, decision, "session")
        reading = await _request(parts, child.id, shared / "notes.txt")
        denied = await _request(parts, child.id, private / "keys.txt")
        async with anyio.create_task_group() as group:  # writing where reading was denied: asked
            group.start_soon(_request, parts, child.id, private, "write")
            [asked] = await pending(parts)
            await parts.approvals.answer_approval(asked.id, "deny", "once")

    assert reading.granted and reading.remember == "session"
    assert reading.reason == f"granted this session by the user (write on {shared}, asked for {top.id})"
    assert (
        not denied.granted
        and denied.reason == f"denied this session by the user (read on {private}, asked for {top.id})"
    )
    assert (asked.path, asked.operation, asked.chain) == (str(private), "write", ["top", "child"])


async def test_always_lands_in_the_project_config_and_is_not_asked_again(tmp_path: Path) -> None:
    root, outside = tmp_path / "project", tmp_path / "datasets"
    config = root / ".dispatch" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("# my settings\nlsp:\n  rust: false  # no rust here\n")
    decisions: list[AccessDecision] = []
    async with running_hub(root, tmp_path / "dispatch.db", Catalog.load(root)) as parts:
        top = idle_agent(parts.tree, "top")
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: _collect(decisions, _request(parts, top.id, outside, "execute")))
            [asked] = await pending(parts)
            await parts.approvals.answer_approval(asked.id, "approve", "always")
        other = await _request(parts, idle_agent(parts.tree, "another-top").id, outside / "x", "write")

    text = config.read_text()
    assert text.startswith("# my settings\nlsp:\n  rust: false  # no rust here\n")
    assert yaml.safe_load(text)["permissions"]["auto_allow"] == [str(outside)]
    assert load_config(root).config.permissions.auto_allow == [str(outside)]
    assert decisions[0].granted and other.granted and other.remember == "always"
    assert other.reason == f"permissions.auto_allow: {outside}"  # the config's list and this run's answers: one rule
    async with running_hub(root, tmp_path / "dispatch.db", Catalog.load(root)) as parts:  # a later hub
        later = await _request(parts, idle_agent(parts.tree, "top").id, outside / "y.txt")
        assert later.granted and await parts.approvals.approvals("pending") == []


async def test_always_creates_the_project_config_file(tmp_path: Path) -> None:
    root = tmp_path / "project"
    async with running_hub(root, tmp_path / "dispatch.db") as parts:
        top = idle_agent(parts.tree, "top")
        async with anyio.create_task_group() as group:
            group.start_soon(_request, parts, top.id, Path("/opt/tools"))
            [asked] = await pending(parts)
            await parts.approvals.answer_approval(asked.id, "approve", "always")
    assert load_config(root).config.permissions.auto_allow == ["/opt/tools"]


async def test_paths_under_auto_allow_are_granted_without_asking(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / ".dispatch").mkdir(parents=True)
    (root / ".dispatch" / "config.yaml").write_text(f"permissions:\n  auto_allow: [{tmp_path / 'cache'}]\n")
    async with running_hub(root, tmp_path / "dispatch.db", Catalog.load(root)) as parts:
        decision = await _request(parts, idle_agent(parts.tree, "top").id, tmp_path / "cache" / "x" / ".." / "y")
        assert await parts.approvals.approvals(None) == []
    assert decision.granted and decision.reason == f"permissions.auto_allow: {tmp_path / 'cache'}"


async def test_a_checkpoint_with_auto_approve_proceeds_by_itself(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script("[auto]", [Reply(text="the plan: ship it")])
    async with running_hub(tmp_path / "project", tmp_path / "dispatch.db") as parts:
        spec = top_spec("[auto] plan", checkpoints={"plan": "auto_approve 1s"})
        top = await parts.tree.run(spec)
        [approval] = await parts.approvals.approvals("approved")
        resolved = [e.data for e in parts.events if isinstance(e.data, ApprovalResolved)]

    assert_done(top)
    assert top.report == "the plan: ship it"
    assert (approval.kind, approval.checkpoint, approval.content) == (
        "checkpoint",
        "before_report",
        "the plan: ship it",
    )
    assert approval.auto_approve_at is not None and approval.auto_approve_at > approval.created_at
    assert resolved == [
        ApprovalResolved(approval_id=approval.id, state="approved", decided_by="auto_approve", remember="once")
    ]


async def test_a_denied_checkpoint_stops_the_agent_with_a_clear_reason(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    scripted_llm.script("[deny]", [Reply(text="my plan")])
    async with running_hub(tmp_path / "project", tmp_path / "dispatch.db") as parts:
        top = parts.tree.start(top_spec("[deny] plan", checkpoints=["report"]))
        [asked] = await pending(parts)
        waiting = (top.state, top.reason)
        await parts.approvals.answer_approval(asked.id, "deny", "once")
        await top.finished.wait()

    assert waiting == (AgentState.waiting_user, "waiting for your approval at checkpoint before_report")
    assert top.state is AgentState.failed and top.report is None
    assert (
        top.error == top.reason == f"checkpoint before_report: the report was denied by the user (approval {asked.id})"
    )


async def test_a_childs_checkpoint_names_the_chain_and_the_user_answers_it(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    scripted_llm.script(
        "[lead]",
        [
            Reply(tool_calls=[call("summon", task="[plan] plan it", template="planner", name="planner", wait=True)]),
            lambda r: Reply(text=f"lead got: {last_tool_json(r.messages)['finished'][0]['report']}"),
        ],
    )
    scripted_llm.script("[plan]", [Reply(text="step 1, step 2")])
    async with running_hub(tmp_path / "project", tmp_path / "dispatch.db") as parts:
        top = parts.tree.start(top_spec("[lead] get a plan"))
        [asked] = await pending(parts)
        await parts.approvals.answer_approval(asked.id, "approve", "once")
        await top.finished.wait()

    assert (asked.chain, asked.checkpoint, asked.content) == (["top", "planner"], "before_report", "step 1, step 2")
    assert_done(top)
    assert top.report == "lead got: step 1, step 2"


async def test_before_write_holds_fs_writes_until_approved(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    root = tmp_path / "project"
    scripted_llm.script(
        "[writer]",
        [
            Reply(tool_calls=[call("write_file", path="a.txt", content="hello")]),
            Reply(tool_calls=[call("write_file", path="b.txt", content="nope")]),
            Reply(text="done"),
        ],
    )
    async with running_hub(root, tmp_path / "dispatch.db") as parts:
        top = parts.tree.start(top_spec("[writer] write", checkpoints={"edit": "ask", "report": "off"}))
        [first] = await pending(parts)
        written_early = (root / "a.txt").exists()
        await parts.approvals.answer_approval(first.id, "approve", "once")
        [second] = await pending(parts)
        await parts.approvals.answer_approval(second.id, "deny", "once")
        await top.finished.wait()

    assert_done(top)
    assert first.checkpoint == "before_write" and first.content == "write_file a.txt (5 characters)"
    assert first.diff == (  # a new file: all added
        "diff --git a/a.txt b/a.txt\n--- /dev/null\n+++ b/a.txt\n@@ -0,0 +1 @@\n+hello\n\\ No newline at end of file\n"
    )
    assert not written_early and (root / "a.txt").read_text() == "hello" and not (root / "b.txt").exists()
    refusal = tool_messages(scripted_llm.requests_for("[writer]")[2].messages)[-1]
    denied = f"write_file was denied at checkpoint before_write by the user (approval {second.id}); it did not run."
    assert refusal == f"Error: refused by the hub: {denied} Do not retry it; report what you could not do."


async def test_before_destructive_holds_rm_rf_but_not_harmless_commands(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    (root / "build").mkdir(parents=True)
    scripted_llm.script(
        "[cleaner]",
        [
            Reply(tool_calls=[call("run", command="ls")]),
            Reply(tool_calls=[call("run", command="rm -rf build")]),
            Reply(text="gave up"),
        ],
    )
    async with running_hub(root, tmp_path / "dispatch.db") as parts:
        top = parts.tree.start(top_spec("[cleaner] clean", checkpoints={"destructive": "ask"}))
        [asked] = await pending(parts)
        await parts.approvals.answer_approval(asked.id, "deny", "session")
        await top.finished.wait()

    assert_done(top)
    assert (asked.checkpoint, asked.content) == ("before_destructive", "run: rm -rf build\n(rm deletes files)")
    assert (root / "build").is_dir()
    assert "build" in tool_messages(scripted_llm.requests_for("[cleaner]")[1].messages)[-1], "ls was held"


async def test_answering_wrong_ids_states_and_twice_is_refused(tmp_path: Path) -> None:
    async with running_hub(tmp_path / "project", tmp_path / "dispatch.db") as parts:
        top = idle_agent(parts.tree, "top")
        with pytest.raises(NotFoundError, match="no approval has the id 'ap-nope'"):
            await parts.approvals.answer_approval("ap-nope", "approve", "once")
        with pytest.raises(UserError, match="state: expected one of pending, approved, denied"):
            await parts.approvals.approvals("maybe")
        async with anyio.create_task_group() as group:
            group.start_soon(_request, parts, top.id, Path("/srv/x"))
            [asked] = await pending(parts)
            await parts.approvals.answer_approval(asked.id, "approve", "once")
        with pytest.raises(UserError, match="was answered already"):
            await parts.approvals.answer_approval(asked.id, "deny", "once")


async def test_an_agent_stopped_while_asking_leaves_no_pending_approval(tmp_path: Path) -> None:
    async with running_hub(tmp_path / "project", tmp_path / "dispatch.db") as parts:
        top = idle_agent(parts.tree, "top")
        async with anyio.create_task_group() as group:
            group.start_soon(_request, parts, top.id, Path("/srv/y"))
            [asked] = await pending(parts)
            group.cancel_scope.cancel()
        [denied] = await parts.approvals.approvals("denied")
        assert denied.id == asked.id and await parts.approvals.approvals("pending") == []
        assert await parts.approvals.close_stale() == 0


async def test_always_for_a_pseudo_target_writes_no_config(tmp_path: Path) -> None:
    root = tmp_path / "project"
    decisions: list[AccessDecision] = []
    async with running_hub(root, tmp_path / "dispatch.db") as parts:
        top = idle_agent(parts.tree, "top")
        async with anyio.create_task_group() as group:
            group.start_soon(_collect, decisions, parts.approvals.request_access(top, "network", "read", "docs"))
            [asked] = await pending(parts)
            await parts.approvals.answer_approval(asked.id, "approve", "always")
    assert asked.path == "network" and decisions[0].granted and decisions[0].remember == "always"
    assert not (root / ".dispatch" / "config.yaml").exists()


async def test_a_message_sent_while_the_report_waits_for_approval_is_read_before_reporting(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    scripted_llm.script("[amend]", [Reply(text="first plan"), Reply(text="second plan")])
    async with running_hub(tmp_path / "project", tmp_path / "dispatch.db") as parts:
        top = parts.tree.start(top_spec("[amend] plan", checkpoints=["report"]))
        [first] = await pending(parts)
        parts.tree.put_message(top.id, MessageKind.correction, "Use the second approach.")
        await parts.approvals.answer_approval(first.id, "approve", "once")
        [second] = await pending(parts)  # the first is answered: the next one, for the new answer
        await parts.approvals.answer_approval(second.id, "approve", "once")
        await top.finished.wait()

    assert_done(top)
    assert (first.content, second.content, top.report) == ("first plan", "second plan", "second plan")
    read = scripted_llm.requests_for("[amend]")[1].messages[-1]
    assert read["role"] == "user" and "Use the second approach." in str(read["content"])
