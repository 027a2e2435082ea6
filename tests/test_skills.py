"""Skills: discovery at the global and project levels, the loading order, ``global:``/``project:``
disambiguation, mapping files (``.txt`` for a subagent, ``.o.txt`` for an orchestrator), and an agent
listing and loading its on-demand skills through its inbox tools."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.cli import app
from dispatch.hub.config.skills import SkillIndex
from dispatch.hub.errors import ConfigError, UserError
from dispatch.hub.llm.client import LiteLLMClient
from tests.agent_helpers import MODEL, assert_done, call, tool_messages
from tests.fakes.scripted_llm import Reply, ScriptedLLM


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fixture tree: both levels with defaults, on-demand skills (``perf`` at both levels), and
    mappings for ``coder`` as a subagent (``.txt``) and as an orchestrator (``.o.txt``)."""
    home, root = Path.home() / ".skills", tmp_path / "proj"
    write(home / "default" / "b-house.md", "# Global house rules\n")
    write(home / "default" / "a-tone.md", "# Global tone\n")
    write(home / "project" / "perf.md", "# Global perf\nprofile first\n")
    write(home / "project" / "git.md", "# Git conventions\n")
    write(home / "agents" / "coder.txt", "# the coder subagent\ngit.md\n\nperf\n")
    write(home / "agents" / "coder.o.txt", "git\n")
    write(root / ".skills" / "default" / "style.md", "# Project style\n")
    write(root / ".skills" / "project" / "perf.md", "# Project perf\nuse the bench/ scripts\n")
    write(root / ".skills" / "project" / "db.md", "# Project database\n")
    write(root / ".skills" / "agents" / "coder.txt", "perf\ndb.md\nglobal:perf\n")
    write(root / ".skills" / "agents" / "coder.o.txt", "builtin:decompose\n")
    return root


def refs(index: SkillIndex, agent: str, orchestrator: bool, **extra: list[str]) -> list[tuple[str, str]]:
    plan = index.plan(agent, orchestrator=orchestrator, template="coder", **extra)
    return [(s.skill.ref, s.origin) for s in plan]


def test_loading_order_for_a_subagent(project: Path) -> None:
    index = SkillIndex.discover(project)

    loaded = refs(index, "coder", False, template_skills=["report"], requested=["project:db", "global:git"])

    assert loaded == [
        ("global:a-tone", "global default"),
        ("global:b-house", "global default"),
        ("project:style", "project default"),
        ("builtin:report", "template coder"),
        ("global:git", "~/.skills/agents/coder.txt line 2"),
        ("global:perf", "~/.skills/agents/coder.txt line 4"),  # a bare name in a mapping: its own level
        ("project:perf", f"{project}/.skills/agents/coder.txt line 1"),
        ("project:db", f"{project}/.skills/agents/coder.txt line 2"),
    ]  # global:perf (project line 3) and the requested ones are loaded already: once, at first place


def test_orchestrator_mapping_is_the_o_txt_file(project: Path) -> None:
    index = SkillIndex.discover(project)

    orchestrator = [ref for ref, _ in refs(index, "coder", True)]
    subagent = [ref for ref, _ in refs(index, "coder", False)]

    assert orchestrator[3:] == ["global:git", "builtin:decompose"]
    assert subagent[3:] == ["global:git", "global:perf", "project:perf", "project:db"]
    assert [ref for ref, _ in refs(index, "someone-else", False)] == subagent[:3]


def test_same_name_at_both_levels_is_kept_and_addressed_by_scope(project: Path) -> None:
    index = SkillIndex.discover(project)

    assert index.resolve("global:perf").read() == "# Global perf\nprofile first"
    assert index.resolve("project:perf.md").read() == "# Project perf\nuse the bench/ scripts"
    assert {s.ref for s in index.on_demand()} >= {"global:perf", "project:perf", "global:git", "project:db"}
    with pytest.raises(UserError) as ambiguous:
        index.resolve("perf")
    assert "'perf' is ambiguous" in str(ambiguous.value)
    assert "global:perf (~/.skills/project/perf.md)" in str(ambiguous.value)
    assert f"project:perf ({project}/.skills/project/perf.md)" in str(ambiguous.value)
    assert index.resolve("db").ref == "project:db"  # unique: the bare name is enough
    with pytest.raises(UserError, match="no skill named 'nothing'"):
        index.resolve("nothing")
    with pytest.raises(UserError, match="expected the scope global:, project: or builtin:"):
        index.resolve("local:perf")


def test_a_mapping_naming_a_missing_skill_names_the_file_and_line(project: Path) -> None:
    write(project / ".skills" / "agents" / "reviewer.txt", "db\n\n# lint next\nlint-rules.md\n")

    with pytest.raises(ConfigError) as raised:
        SkillIndex.discover(project)

    assert str(raised.value).startswith(f"{project}/.skills/agents/reviewer.txt line 4: no skill named 'lint-rules'")


def test_one_name_twice_in_one_level_is_an_error(project: Path) -> None:
    write(project / ".skills" / "default" / "db.md", "# again\n")

    with pytest.raises(ConfigError, match="skill 'db' is in both"):
        SkillIndex.discover(project)


def test_dispatch_skills_shows_the_order_with_scopes(project: Path) -> None:
    result = CliRunner().invoke(app, ["skills", "--agent", "coder", "--root", str(project)])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Agent 'coder' (subagent, template coder) loads, in this order:"
    order = [line.split()[0] for line in lines[1 : lines.index(next(x for x in lines if x.startswith("On demand")))]]
    assert order == [
        "global:a-tone",
        "global:b-house",
        "project:style",
        "builtin:report",
        "global:git",
        "global:perf",
        "project:perf",
        "project:db",
    ]
    orchestrator = CliRunner().invoke(app, ["skills", "--agent", "coder", "--orchestrator", "--root", str(project)])
    assert "builtin:decompose" in orchestrator.output.split("On demand")[0]


def test_dispatch_skills_warns_about_a_name_nothing_knows(project: Path) -> None:
    typo = CliRunner().invoke(app, ["skills", "--agent", "codr", "--root", str(project)])
    mapped = CliRunner().invoke(app, ["skills", "--agent", "reviewer", "--root", str(project)])

    assert typo.exit_code == 0, typo.output
    assert typo.output.splitlines()[0].startswith("warning: no template or skill mapping is named 'codr' (templates: ")
    assert "coder" in typo.output.splitlines()[0]
    assert not mapped.output.startswith("warning"), "a template's name is known"


@pytest.mark.anyio
async def test_agent_prompt_holds_skills_in_order_and_it_loads_more_on_demand(
    scripted_llm: ScriptedLLM, project: Path
) -> None:
    scripted_llm.script(
        "[skilled]",
        [
            Reply(tool_calls=[call("skills")]),
            Reply(tool_calls=[call("load_skill", name="perf")]),
            Reply(tool_calls=[call("load_skill", name="builtin:review"), call("load_skill", name="style")]),
            Reply(tool_calls=[call("skills")]),
            Reply(text="done"),
        ],
    )
    catalog = Catalog.load(project)
    spec = catalog.top_spec("[skilled] work", model=MODEL, template="coder", skills=["global:perf"])

    async with AgentTree(project, LiteLLMClient(), catalog=catalog) as tree:
        top = await tree.run(spec)

    assert_done(top)
    first, *_, last = scripted_llm.requests_for("[skilled]")
    prompt = first.messages[0]["content"]
    headers = [line for line in prompt.splitlines() if line.startswith("# Skill ")]
    assert headers == [
        "# Skill global:a-tone",
        "# Skill global:b-house",
        "# Skill project:style",
        "# Skill builtin:report",
        "# Skill global:git",
        "# Skill global:perf",
        "# Skill project:perf",
        "# Skill project:db",
    ]
    assert prompt.index("You are a coder") < prompt.index("# Skill global:a-tone")
    listed, ambiguous, loaded, already, relisted = tool_messages(last.messages)
    assert "- project:perf (loaded): Project perf" in listed
    assert "- builtin:review: Review: check a change" in listed
    assert "ambiguous" in ambiguous and "global:perf" in ambiguous and "project:perf" in ambiguous
    assert loaded.startswith("# Review: check a change and report what is wrong with it")
    assert already == "project:style is loaded already; it is in your context."
    assert "- builtin:review (loaded)" in relisted
    assert [s.skill.ref for s in top.loaded_skills][-1] == "builtin:review"
