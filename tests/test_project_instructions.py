"""Project instructions: AGENTS.md and CLAUDE.md at the root reach every agent's first request
(after Dispatch's rules, before the skills), one in a subfolder reaches an agent whose write
scope lies there, a large one is cut with a note, and ``dispatch skills`` lists them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.cli import app
from dispatch.hub.config.instructions import MAX_INSTRUCTIONS_BYTES
from dispatch.hub.llm.client import LiteLLMClient
from tests.agent_helpers import MODEL, assert_done, call, make_tree, top_spec
from tests.fakes.scripted_llm import Reply, ScriptedLLM

pytestmark = pytest.mark.anyio


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    write(root / "AGENTS.md", "# House rules\nRun `make check` before you report.\n")
    write(root / "CLAUDE.md", "Prefer small functions.\n")
    write(root / "web" / "AGENTS.md", "The web folder uses tabs, never spaces.\n")
    write(root / "api" / "AGENTS.md", "The api folder is frozen.\n")
    write(root / ".skills" / "default" / "style.md", "# Project style\n")
    return root


async def test_first_request_carries_the_root_files_between_the_rules_and_the_skills(
    scripted_llm: ScriptedLLM, project: Path
) -> None:
    scripted_llm.script("[top]", [Reply(text="done")])
    catalog = Catalog.load(project)
    spec = catalog.top_spec("[top] work", model=MODEL, template="coder")

    async with AgentTree(project, LiteLLMClient(), catalog=catalog) as tree:
        assert_done(await tree.run(spec))

    prompt = scripted_llm.requests_for("[top]")[0].messages[0]["content"]
    assert "# Project instructions (AGENTS.md)\n\n# House rules\nRun `make check` before you report." in prompt
    assert "# Project instructions (CLAUDE.md)\n\nPrefer small functions." in prompt
    assert prompt.index("You are an agent in Dispatch") < prompt.index("(AGENTS.md)") < prompt.index("(CLAUDE.md)")
    assert prompt.index("(CLAUDE.md)") < prompt.index("# Skill project:style")
    assert "tabs, never spaces" not in prompt, "the top agent writes the whole root: no subfolder's file"


async def test_a_child_reads_the_file_of_the_folder_its_scope_lies_in(scripted_llm: ScriptedLLM, project: Path) -> None:
    scripted_llm.script(
        "[parent]",
        [
            Reply(tool_calls=[call("summon", task="[child] style web/app.js", scope=["web/app.js"], wait=True)]),
            Reply(text="the child reported"),
        ],
    )
    scripted_llm.script("[child]", [Reply(text="styled")])

    async with make_tree(project) as tree:
        assert_done(await tree.run(top_spec("[parent] split")))

    child = scripted_llm.requests_for("[child]")[0].messages[0]["content"]
    assert "# Project instructions (AGENTS.md)" in child
    assert "# Project instructions (web/AGENTS.md)\n\nThe web folder uses tabs, never spaces." in child
    assert child.index("(AGENTS.md)") < child.index("(web/AGENTS.md)")
    assert "frozen" not in child, "api/ is not in its scope"


async def test_a_large_file_is_cut_with_a_note(scripted_llm: ScriptedLLM, project: Path) -> None:
    write(project / "AGENTS.md", "rule\n" * (MAX_INSTRUCTIONS_BYTES // 5 + 100) + "THE LAST LINE\n")
    scripted_llm.script("[top]", [Reply(text="done")])

    async with make_tree(project) as tree:
        assert_done(await tree.run(top_spec("[top] work")))

    prompt = scripted_llm.requests_for("[top]")[0].messages[0]["content"]
    size = (project / "AGENTS.md").stat().st_size
    assert f"[AGENTS.md is {size:,} bytes: only its first {MAX_INSTRUCTIONS_BYTES:,} are here" in prompt
    assert "THE LAST LINE" not in prompt


async def test_a_file_leading_out_of_the_project_is_not_read(
    scripted_llm: ScriptedLLM, project: Path, tmp_path: Path
) -> None:
    (project / "CLAUDE.md").unlink()
    write(tmp_path / "elsewhere.md", "outside words\n")
    (project / "CLAUDE.md").symlink_to(tmp_path / "elsewhere.md")
    scripted_llm.script("[top]", [Reply(text="done")])

    async with make_tree(project) as tree:
        assert_done(await tree.run(top_spec("[top] work")))

    prompt = scripted_llm.requests_for("[top]")[0].messages[0]["content"]
    assert "outside words" not in prompt
    assert "(AGENTS.md)" in prompt


def test_dispatch_skills_lists_them_with_their_source(project: Path) -> None:
    result = CliRunner().invoke(app, ["skills", "--agent", "coder", "--root", str(project)])

    assert result.exit_code == 0, result.output
    rows = [line.split(None, 1) for line in result.output.split("On demand")[0].splitlines()[1:]]
    assert [row[0] for row in rows[:5]] == [
        "AGENTS.md",
        "CLAUDE.md",
        "api/AGENTS.md",
        "web/AGENTS.md",
        "project:style",
    ]
    assert rows[0][1].split() == ["project", "instructions", str(project / "AGENTS.md")]
    assert "if its write scope is in web/" in rows[3][1]
