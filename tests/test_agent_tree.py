"""The agent primitive end to end: real litellm against the scripted model server, real MCP
client sessions to the tool servers, a real tree of agents on a temporary project root."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from dispatch.hub.agents.spec import AgentState
from dispatch.hub.policy.grants import Grants
from dispatch.servers.hublink import MessageKind
from tests.agent_helpers import assert_done, call, last_tool_json, make_tree, tool_messages, top_spec, until
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM

pytestmark = pytest.mark.anyio


def _child_script(llm: ScriptedLLM, tag: str, path: str, delay_s: float = 0.4) -> None:
    llm.script(
        f"[{tag}]",
        [
            Reply(tool_calls=[call("write_file", path=path, content=f"written by {tag}\n")], delay_s=delay_s),
            Reply(text=f"{tag} wrote {path}"),
        ],
    )


async def test_three_children_with_disjoint_scopes_run_concurrently_and_report(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    summons = [call("summon", task=f"[child-{x}] write {x}/out.txt", scope=[x], name=f"child-{x}") for x in "abc"]

    def final(request: RecordedRequest) -> Reply:
        return Reply(text="All children reported:\n" + tool_messages(request.messages)[-1])

    scripted_llm.script("[parent]", [Reply(tool_calls=summons), Reply(tool_calls=[call("wait")]), final])
    for x in "abc":
        _child_script(scripted_llm, f"child-{x}", f"{x}/out.txt")

    async with make_tree(tmp_path) as tree:
        top = await tree.run(top_spec("[parent] split the work in three"))

    assert_done(top)
    for x in "abc":
        assert (tmp_path / x / "out.txt").read_text() == f"written by child-{x}\n"
        assert f"child-{x} wrote {x}/out.txt" in (top.report or "")
    first_calls = [scripted_llm.requests_for(f"[child-{x}]")[0] for x in "abc"]
    assert max(r.started_at for r in first_calls) < min(r.finished_at for r in first_calls), "children ran one by one"
    children = tree.children_of(top.id)
    assert sorted(c.spec.scope for c in children) == [("a",), ("b",), ("c",)]
    assert all(c.state is AgentState.done for c in children)


async def test_overlapping_scope_and_grant_escalation_are_refused(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    orchestrator = Grants(summon=True, shell=False, write=("src",))
    scripted_llm.script(
        "[parent]",
        [
            Reply(tool_calls=[call("summon", task="[first] hold src/a", scope=["src/a"])]),
            Reply(
                tool_calls=[
                    call("summon", task="[second] overlap", scope=["src"]),
                    call("summon", task="[third] escalate", scope=["src/b"], grants={"shell": True}),
                    call("summon", task="[fourth] outside", scope=["docs"]),
                ]
            ),
            Reply(tool_calls=[call("wait")]),
            Reply(text="parent done"),
        ],
    )
    scripted_llm.script("[first]", [Reply(text="first done", delay_s=1.0)])

    async with make_tree(tmp_path) as tree:
        top = await tree.run(top_spec("[parent] try bad summons", grants=orchestrator))

    assert_done(top)
    third_request = scripted_llm.requests_for("[parent]")[2]
    overlap, escalate, outside = tool_messages(third_request.messages)[1:4]
    first = tree.children_of(top.id)[0]
    assert "summon refused" in overlap
    assert f"write scope 'src' overlaps the scope 'src/a' of running sibling {first.id}" in overlap
    assert "shell: the parent has no shell grant" in escalate
    assert "write 'docs': outside the parent's write paths ('src')" in outside
    assert len(tree.children_of(top.id)) == 1
    leaf_tools = scripted_llm.requests_for("[first]")[0].tool_names
    assert "summon" not in leaf_tools and "wait" not in leaf_tools and "run" not in leaf_tools
    assert {"read_file", "write_file", "check_messages"} <= set(leaf_tools)


async def test_depth_three_grandchild_summons_great_grandchild(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    chain = ["top", "child", "grandchild"]
    for level, name in enumerate(chain):
        below = chain[level + 1] if level + 1 < len(chain) else "great-grandchild"
        scripted_llm.script(
            f"[{name}]",
            [
                Reply(tool_calls=[call("summon", task=f"[{below}] go deeper", grants={"summon": True}, wait=True)]),
                lambda r, name=name: Reply(text=f"{name} saw: {last_tool_json(r.messages)['finished'][0]['report']}"),
            ],
        )
    scripted_llm.script("[great-grandchild]", [Reply(text="bottom reached")])

    async with make_tree(tmp_path) as tree:
        top = await tree.run(top_spec("[top] go deep"))

    assert_done(top)
    assert top.report == "top saw: child saw: grandchild saw: bottom reached"
    depth = 0
    node = top
    while tree.children_of(node.id):
        node = tree.children_of(node.id)[0]
        depth += 1
    assert depth == 3


async def test_message_to_running_child_arrives_right_after_its_next_tool_result(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    scripted_llm.script(
        "[parent]",
        [Reply(tool_calls=[call("summon", task="[child] list files", wait=True)]), Reply(text="ok")],
    )
    scripted_llm.script(
        "[child]",
        [
            Reply(tool_calls=[call("list_dir", path=".")], delay_s=0.6),
            Reply(tool_calls=[call("list_dir", path=".")]),
            Reply(text="child done"),
        ],
    )

    async with make_tree(tmp_path) as tree:
        top = tree.start(top_spec("[parent] delegate"))
        await until(lambda: len(scripted_llm.requests_for("[child]")) == 1)
        child = tree.children_of(top.id)[0]
        message_id = tree.put_message(child.id, MessageKind.correction, "Use the docs folder instead.")
        await top.finished.wait()

    assert_done(top)
    second = scripted_llm.requests_for("[child]")[1].messages
    assert second[-2]["role"] == "tool"
    assert second[-1]["role"] == "user"
    assert second[-1]["content"].startswith(f"[correction from the user · message {message_id}]")
    assert "Use the docs folder instead." in second[-1]["content"]
    assert all(
        "Use the docs folder" not in str(m.get("content")) for m in scripted_llm.requests_for("[child]")[0].messages
    )


async def test_parent_blocked_in_wait_gets_a_user_message_within_a_second(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    scripted_llm.script(
        "[parent]",
        [
            Reply(tool_calls=[call("summon", task="[slow] take your time", wait=True)]),
            Reply(tool_calls=[call("wait")]),
            Reply(text="parent finished after the slow child"),
        ],
    )
    scripted_llm.script("[slow]", [Reply(text="slow child done", delay_s=4.0)])

    async with make_tree(tmp_path) as tree:
        top = tree.start(top_spec("[parent] wait on a slow child"))
        await until(lambda: top.state is AgentState.waiting_children)
        sent_at = anyio.current_time()
        tree.put_message(top.id, MessageKind.instruction, "Status please.")
        await until(lambda: len(scripted_llm.requests_for("[parent]")) == 2, timeout_s=1.0)
        answered_in = anyio.current_time() - sent_at
        slow = tree.children_of(top.id)[0]
        assert slow.state is AgentState.running, "the child must keep running"
        await top.finished.wait()

    assert answered_in < 1.0
    assert_done(top)
    second = scripted_llm.requests_for("[parent]")[1].messages
    assert "A message arrived for you" in second[-2]["content"]
    assert "[instruction from the user" in second[-1]["content"]
    third = scripted_llm.requests_for("[parent]")[2].messages
    assert "slow child done" in tool_messages(third)[-1]


async def test_isolated_agent_uses_stdio_tool_servers(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script(
        "[isolated]",
        [
            Reply(
                tool_calls=[
                    call("write_file", path="x.txt", content="x"),
                    call("run", command="cat x.txt || true"),
                ]
            ),
            Reply(tool_calls=[call("run", command="cat x.txt")]),
            Reply(text="done"),
        ],
    )
    async with make_tree(tmp_path) as tree:
        top = await tree.run(top_spec("[isolated] write over stdio", isolated=True))
    assert_done(top)
    assert (tmp_path / "x.txt").read_text() == "x"
    assert "x" in tool_messages(scripted_llm.requests_for("[isolated]")[2].messages)[-1]


async def test_a_cancelled_parent_is_finished_only_once_its_children_have_stopped(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    """Whoever waits for a stopped agent (its own parent, the API, a command) finds the agents it
    started stopped too, not still unwinding a step (a closing hub would leave those running)."""
    scripted_llm.script(
        "[parent]",
        [
            Reply(tool_calls=[call("summon", task="[slow] take your time", scope=["out"])]),
            Reply(tool_calls=[call("wait")]),
        ],
    )
    scripted_llm.script("[slow]", [Reply(tool_calls=[call("list_dir", path=".")]), Reply(text="late", delay_s=4)])

    async with make_tree(tmp_path) as tree:
        top = tree.start(top_spec("[parent] start a slow child"))
        await until(lambda: top.state is AgentState.waiting_children)
        (child,) = tree.children_of(top.id)
        await until(lambda: len(scripted_llm.requests_for("[slow]")) == 2)  # in its slow model call
        tree.cancel(top.id)
        await top.finished.wait()
        assert child.state is AgentState.cancelled
