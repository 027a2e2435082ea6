"""The config's hooks, in Claude Code's shape, run as real processes around real agents: a
PreToolUse hook blocks a call (exit 2, or its JSON), a PostToolUse hook gets the call as JSON on
stdin, a hook that fails or hangs is ignored, Stop and UserPromptSubmit hooks steer the agent, and
a bad config is one line naming the file and field."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.agents.spec import AgentState
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.errors import ConfigError
from dispatch.hub.llm.client import LiteLLMClient
from dispatch.servers.hublink import MessageKind
from tests.agent_helpers import assert_done, call, tool_messages, top_spec, until
from tests.chat_helpers import Parts, eventually, running_hub
from tests.fakes.scripted_llm import Reply, ScriptedLLM

pytestmark = pytest.mark.anyio


def configure(root: Path, hooks: dict[str, Any]) -> Catalog:
    """The project's config with ``hooks`` (JSON is YAML), and its catalog."""
    (root / ".dispatch").mkdir(parents=True, exist_ok=True)
    (root / ".dispatch" / "config.yaml").write_text(json.dumps({"hooks": hooks}))
    return Catalog.load(root)


def command(text: str, timeout: float | None = None) -> dict[str, Any]:
    hook: dict[str, Any] = {"type": "command", "command": text}
    return hook if timeout is None else hook | {"timeout": timeout}


def running(pid: int) -> bool:
    """Whether ``pid`` is alive (a zombie waiting to be reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    return root


async def test_a_pre_tool_use_hook_exiting_2_blocks_write_file_and_the_model_reads_its_stderr(
    scripted_llm: ScriptedLLM, project: Path
) -> None:
    guard = "echo 'generated files are read-only: edit the template instead' >&2; exit 2"
    catalog = configure(project, {"PreToolUse": [{"matcher": "write_file|edit_file", "hooks": [command(guard)]}]})
    scripted_llm.script(
        "[blocked]",
        [
            Reply(tool_calls=[call("write_file", path="gen.py", content="x = 1\n")]),
            Reply(tool_calls=[call("read_file", path=".dispatch/config.yaml")]),
            Reply(text="could not write"),
        ],
    )

    async with AgentTree(project, LiteLLMClient(), catalog=catalog) as tree:
        assert_done(await tree.run(top_spec("[blocked] write gen.py")))

    second = scripted_llm.requests_for("[blocked]")[1]
    blocked = tool_messages(second.messages)[-1]
    assert blocked.startswith("Error: not run: a PreToolUse hook blocked write_file:")
    assert "generated files are read-only: edit the template instead" in blocked
    assert not (project / "gen.py").exists()
    third = scripted_llm.requests_for("[blocked]")[2]
    assert "Error: not run" not in tool_messages(third.messages)[-1], "read_file does not match the matcher"


async def test_a_post_tool_use_hook_gets_the_call_as_json_in_the_root_without_secrets(
    scripted_llm: ScriptedLLM, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-hooks")
    seen = tmp_path / "seen"
    seen.mkdir()
    # the hook keeps its input and the transcript file as it was when it ran, per call
    keep = (
        "import json, shutil, sys; given = json.load(sys.stdin); name = given['tool_use_id']; "
        "open(f'{sys.argv[1]}/{name}.json', 'w').write(json.dumps(given)); "
        "shutil.copy(given['transcript_path'], f'{sys.argv[1]}/{name}.jsonl')"
    )
    record = f'{sys.executable} -c "{keep}" {seen}; pwd > {seen}/cwd; env > {seen}/env'
    catalog = configure(project, {"PostToolUse": [{"matcher": "fs__.*", "hooks": [command(record)]}]})
    scripted_llm.script(
        "[post]",
        [
            Reply(tool_calls=[call("write_file", path="notes.txt", content="hello\n")]),
            Reply(tool_calls=[call("read_file", path="notes.txt")]),
            Reply(text="wrote it"),
        ],
    )

    transcripts = tmp_path / "transcripts"
    async with AgentTree(project, LiteLLMClient(), catalog=catalog, transcripts=transcripts) as tree:
        top = await tree.run(top_spec("[post] write notes.txt"))

    assert_done(top)
    call_id, read_id = (top.transcript[i]["tool_calls"][0]["id"] for i in (2, 4))
    received = json.loads((seen / f"{call_id}.json").read_text())
    assert received == {
        "hook_event_name": "PostToolUse",
        "session_id": top.id,
        "transcript_path": str(transcripts / f"{top.id}.jsonl"),
        "cwd": str(project),
        "agent_id": top.id,
        "agent_name": "top",
        "parent_id": None,
        "tool_name": "write_file",
        "tool_input": {"path": "notes.txt", "content": "hello\n"},
        "tool_use_id": call_id,
        "tool_response": {"content": "created 'notes.txt' (6 bytes)", "is_error": False},
    }
    lines = [json.loads(line) for line in (seen / f"{call_id}.jsonl").read_text().splitlines()]
    assert lines == top.transcript[:3], "system, task, and the answer that made the call: one message a line"
    assert lines[-1]["tool_calls"][0]["function"]["name"] == "write_file"
    later = [json.loads(line) for line in (seen / f"{read_id}.jsonl").read_text().splitlines()]
    assert later == top.transcript[:5], "at the next call: the write's result and the answer that read"
    assert json.loads((seen / f"{read_id}.json").read_text())["tool_use_id"] == read_id
    assert (seen / "cwd").read_text().strip() == str(project)
    env = (seen / "env").read_text()
    assert f"CLAUDE_PROJECT_DIR={project}\n" in env
    assert "sk-not-for-hooks" not in env


async def test_json_decisions_are_followed_and_failing_or_hanging_hooks_are_ignored(
    scripted_llm: ScriptedLLM, project: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "sleeper.pid"
    hang = f"sleep 30 & echo $! > {pid_file}; wait"
    deny = json.dumps({"hookSpecificOutput": {"permissionDecision": "deny", "permissionDecisionReason": "no lists"}})
    catalog = configure(
        project,
        {
            "PreToolUse": [
                {"matcher": "list_dir", "hooks": [command(f"echo '{deny}'")]},
                {"matcher": "write_file", "hooks": [command("echo broken >&2; exit 1"), command(hang, 0.5)]},
            ],
            "PostToolUse": [
                {"hooks": [command("""echo '{"decision": "block", "reason": "run the linter next"}'""")]},
            ],
        },
    )
    scripted_llm.script(
        "[json]",
        [
            Reply(tool_calls=[call("list_dir", path=".")]),
            Reply(tool_calls=[call("write_file", path="a.txt", content="a\n")]),
            Reply(text="done"),
        ],
    )

    started = time.monotonic()
    async with AgentTree(project, LiteLLMClient(), catalog=catalog) as tree:
        assert_done(await tree.run(top_spec("[json] go")))

    assert time.monotonic() - started < 20, "the hanging hook was not killed at its timeout"
    assert not running(int(pid_file.read_text())), "its child too: the whole process group is killed"
    listed, written = tool_messages(scripted_llm.requests_for("[json]")[2].messages)
    assert listed == "Error: not run: a PreToolUse hook blocked list_dir: no lists"
    assert (project / "a.txt").read_text() == "a\n", "exit 1 and a timeout do not block"
    assert written == "created 'a.txt' (2 bytes)\n[a PostToolUse hook on this call (it ran): run the linter next]"


async def test_stop_hooks_hold_a_report_once_and_subagent_stop_runs_for_children(
    scripted_llm: ScriptedLLM, project: Path, tmp_path: Path
) -> None:
    log = tmp_path / "stops.jsonl"
    # the first time (not already continuing because of it), ask for tests; then let it report
    hold = (
        f"""input=$(cat); echo "$input" >> {log}; echo "$input" | grep -q '"stop_hook_active": false' && """
        """echo '{"decision": "block", "reason": "run the tests first"}' || true"""
    )
    catalog = configure(
        project,
        {"Stop": [{"hooks": [command(hold)]}], "SubagentStop": [{"hooks": [command(f"cat >> {log}; echo >> {log}")]}]},
    )
    scripted_llm.script(
        "[parent]",
        [
            Reply(tool_calls=[call("summon", task="[child] say hi", wait=True)]),
            Reply(text="all done"),
            Reply(text="tests pass; all done"),
        ],
    )
    scripted_llm.script("[child]", [Reply(text="hi")])

    async with AgentTree(project, LiteLLMClient(), catalog=catalog) as tree:
        top = await tree.run(top_spec("[parent] work"))

    assert_done(top)
    assert top.report == "tests pass; all done"
    third = scripted_llm.requests_for("[parent]")[2].messages
    assert third[-1] == {"role": "user", "content": "[a stop hook: do not report yet]\nrun the tests first"}
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert [(e["hook_event_name"], e["stop_hook_active"]) for e in events] == [
        ("SubagentStop", False),
        ("Stop", False),
        ("Stop", True),
    ]
    child = events[0]
    assert child["parent_id"] == top.id
    assert child["session_id"] == top.id
    assert child["last_assistant_message"] == "hi"


async def test_user_prompt_submit_adds_context_or_blocks_the_task(scripted_llm: ScriptedLLM, project: Path) -> None:
    gate = "grep -q forbidden && { echo 'that task is off limits' >&2; exit 2; } || echo 'the build is green'"
    catalog = configure(project, {"UserPromptSubmit": [{"hooks": [command(gate)]}]})
    scripted_llm.script("[fine]", [Reply(text="ok")])

    async with AgentTree(project, LiteLLMClient(), catalog=catalog) as tree:
        fine = await tree.run(top_spec("[fine] a task"))
        blocked = await tree.run(top_spec("[forbidden] a task"))

    assert_done(fine)
    assert scripted_llm.requests_for("[fine]")[0].messages[1]["content"] == "[fine] a task\n\nthe build is green"
    assert blocked.state is AgentState.failed
    assert blocked.error == "a UserPromptSubmit hook blocked the task: that task is off limits"
    assert not scripted_llm.requests_for("[forbidden]")


async def test_user_prompt_submit_filters_the_users_messages_as_they_are_delivered(
    scripted_llm: ScriptedLLM, project: Path
) -> None:
    gate = "grep -q forbidden && { echo 'not that' >&2; exit 2; } || echo 'the build is green'"
    catalog = configure(project, {"UserPromptSubmit": [{"hooks": [command(gate)]}]})
    scripted_llm.script("[talk]", [Reply(tool_calls=[call("list_dir", path=".")], delay_s=1.0), Reply(text="ok")])

    async with AgentTree(project, LiteLLMClient(), catalog=catalog) as tree:
        top = tree.start(top_spec("[talk] chat"))
        await until(lambda: len(scripted_llm.requests_for("[talk]")) == 1)
        tree.put_message(top.id, MessageKind.instruction, "do the forbidden thing")
        tree.put_message(top.id, MessageKind.instruction, "use tabs")
        await top.finished.wait()

    assert_done(top)
    users = [m["content"] for m in scripted_llm.requests_for("[talk]")[1].messages if m["role"] == "user"]
    assert users[0] == "[talk] chat\n\nthe build is green"
    assert users[-1].endswith("]\nuse tabs\n\nthe build is green")
    assert not any("forbidden" in text for text in users)


async def test_user_prompt_submit_sees_each_chat_message_that_starts_an_agent(
    scripted_llm: ScriptedLLM, project: Path, tmp_path: Path
) -> None:
    catalog = configure(project, {"UserPromptSubmit": [{"hooks": [command('echo "seen: $(wc -c)"')]}]})
    scripted_llm.script("[chat-h]", [Reply(text="first answer"), Reply(text="second answer")])

    async with running_hub(project, tmp_path / "state" / "dispatch.db", catalog) as parts:
        chat = await parts.chats.create_chat()
        await parts.chats.post_chat_message(chat.id, "[chat-h] plan it")
        await eventually(lambda: has_messages(parts, chat.id, 2))
        await parts.chats.post_chat_message(chat.id, "and the tests?")
        await eventually(lambda: has_messages(parts, chat.id, 4))

    first, second = scripted_llm.requests_for("[chat-h]")
    assert first.messages[-1]["content"].startswith("[chat-h] plan it\n\nseen: ")
    assert second.messages[-1]["content"].startswith("and the tests?\n\nseen: ")


async def has_messages(parts: Parts, chat_id: str, count: int) -> bool:
    return len((await parts.chats.chat(chat_id)).messages) >= count


def test_a_bad_hooks_config_is_one_line_naming_the_file_and_field(project: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        configure(project, {"PreToolUse": [{"matcher": "write_file(", "hooks": [command("true")]}]})
    assert str(raised.value) == (
        f"{project}/.dispatch/config.yaml line 1: hooks.PreToolUse[0].matcher: expected a regular expression: "
        "missing ), unterminated subpattern at position 10"
    )
    with pytest.raises(ConfigError) as raised:
        configure(project, {"PreToolUse": [{"hooks": [{"type": "script", "command": "true"}]}]})
    assert "hooks.PreToolUse[0].hooks[0].type: expected 'command'" in str(raised.value)
    assert os.linesep not in str(raised.value)


async def test_continue_false_stops_a_child_cancelled_and_its_parent_reads_why(
    scripted_llm: ScriptedLLM, project: Path
) -> None:
    stop = """echo '{"continue": false, "stopReason": "child reports go through review", "decision": "block"}'"""
    catalog = configure(project, {"SubagentStop": [{"hooks": [command(stop)]}]})
    scripted_llm.script(
        "[stop-parent]",
        [Reply(tool_calls=[call("summon", task="[stop-child] say hi", wait=True)]), Reply(text="noted")],
    )
    scripted_llm.script("[stop-child]", [Reply(text="hi")])

    async with AgentTree(project, LiteLLMClient(), catalog=catalog) as tree:
        top = await tree.run(top_spec("[stop-parent] work"))
        (child,) = [a for a in tree.agents.values() if a.spec.parent_id == top.id]

    assert_done(top)
    assert child.state is AgentState.cancelled, "continue: false wins over the decision to block"
    assert child.reason == "stopped by a SubagentStop hook: child reports go through review"
    assert child.report is None
    told = json.loads(tool_messages(scripted_llm.requests_for("[stop-parent]")[1].messages)[-1])
    assert told["finished"][0]["report"] == child.reason
