"""One hub, many projects: work started for another project runs there, with that project's
templates; chats keep their project; a bad root is refused naming it; the hub lists its projects."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch.hub.errors import ConfigError, UserError
from dispatch.hub.service.hub import Hub
from tests.agent_helpers import MODEL, call
from tests.chat_helpers import eventually
from tests.fakes.scripted_llm import Reply, ScriptedLLM

pytestmark = pytest.mark.anyio


def _projects(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (b / ".dispatch" / "templates").mkdir(parents=True)
    (b / ".dispatch" / "templates" / "dispatch.yaml").write_text(
        "name: dispatch\ninstructions: You dispatch for project B only.\n"
    )
    return a.resolve(), b.resolve()


async def test_work_started_for_another_project_runs_there_with_its_templates(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    a, b = _projects(tmp_path)
    for tag in ("[in-b]", "[chat-b]", "[in-a]"):
        writes = Reply(tool_calls=[call("write_file", path=f"{tag.strip('[]')}.txt", content=tag)])
        scripted_llm.script(tag, [writes, Reply(text="ok")])

    async with Hub.open(a, tmp_path / "data", default_model=MODEL) as hub:
        in_b = await hub.start("[in-b] write out.txt", root=str(b))
        chat = await hub.create_chat("B's chat", root=str(b))
        await hub.post_chat_message(chat.id, "[chat-b] write out.txt")
        done_b = await hub.wait_finished(in_b.id)

        async def chat_answered() -> bool:
            return len((await hub.chat(chat.id)).messages) == 2

        await eventually(chat_answered)
        in_a = await hub.wait_finished((await hub.start("[in-a] write out.txt")).id)
        about = hub.about()
        chats = await hub.chats()

    assert sorted(p.name for p in b.glob("*.txt")) == ["chat-b.txt", "in-b.txt"]
    assert [p.name for p in a.glob("*.txt")] == ["in-a.txt"]
    assert done_b.state == "done" and done_b.root == str(b) and in_a.root == str(a)
    assert [c.root for c in chats] == [str(b)]
    assert about.root == str(a) and about.projects == [str(a), str(b)]
    system = {r.match: r.messages[0]["content"] for r in scripted_llm.requests}
    assert (
        "You dispatch for project B only." in system["[in-b]"]
        and "You dispatch for project B only." in system["[chat-b]"]
    )
    assert "project B" not in system["[in-a]"]


async def test_a_root_that_is_not_a_project_is_refused_naming_it(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    a, _ = _projects(tmp_path)
    broken = tmp_path / "broken"
    (broken / ".dispatch").mkdir(parents=True)
    (broken / ".dispatch" / "config.yaml").write_text("limits: {running_agents: zero}\n")
    async with Hub.open(a, tmp_path / "data", default_model=MODEL) as hub:
        with pytest.raises(UserError, match="root: 'relative/path' is not an absolute path"):
            await hub.start("anything", root="relative/path")
        with pytest.raises(UserError, match=f"root: '{tmp_path / 'missing'}' is not a directory"):
            await hub.create_chat(root=str(tmp_path / "missing"))
        for odd in ("~no-such-user-here/x", "/tmp/nul\x00byte", "/tmp/\udc80"):  # as a fuzzer sends them
            with pytest.raises(UserError, match="is not a directory"):
                await hub.start("anything", root=odd)
        with pytest.raises(ConfigError, match="running_agents"):
            await hub.start("anything", root=str(broken))
        assert hub.about().projects == [str(a)]
        assert await hub.agents() == [] and await hub.chats() == []
