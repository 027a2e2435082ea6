"""Templates: loading and precedence, role-scoped tools enforced by the hub, child templates,
concurrency limits, and refusals when a template asks for more than its parent has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from typer.testing import CliRunner

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.cli import app
from dispatch.hub.config.project import global_dir
from dispatch.hub.errors import ConfigError
from dispatch.hub.llm.client import LiteLLMClient
from dispatch.hub.policy.checkpoints import CheckpointMode
from dispatch.hub.policy.grants import Grants
from dispatch.hub.policy.servers import BUILTIN_SERVERS, FS
from dispatch.servers import shell, summon
from dispatch.servers.fs import server as fs
from dispatch.servers.web import server as web
from dispatch.servers.web.policy import WebPolicy
from tests.agent_helpers import MODEL, assert_done, call, make_tree, tool_messages, top_spec
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM

INBOX_TOOLS = {"check_messages", "report_progress", "skills", "load_skill"} | {
    "save_artifact",
    "find_artifacts",
    "read_artifact",
}


def template(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def project_template(root: Path, name: str, text: str) -> Path:
    return template(root / ".dispatch" / "templates", name, text)


def dispatch(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dispatch.hub.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=dict(os.environ), check=False)


# ---- loading -------------------------------------------------------------------------------------


def test_builtin_templates_load_and_name_real_skills() -> None:
    catalog = Catalog.builtin()

    assert set(catalog.templates) == {"dispatch", "planner", "coder", "reviewer", "researcher"}
    planner = catalog.template("planner")
    assert planner.detached and planner.checkpoints == {"before_report": CheckpointMode(mode="ask")}
    assert planner.child_names() == ["researcher"]
    reviewer = catalog.template("reviewer").tools
    assert reviewer is not None and reviewer.allowed("fs") == ("read_file", "list_dir", "glob", "grep")
    assert not catalog.template("reviewer").writes() and catalog.template("coder").writes()
    assert {s.ref for s in catalog.skills.skills} == {"builtin:decompose", "builtin:report", "builtin:review"}


@pytest.mark.anyio
async def test_the_tables_tool_lists_match_the_servers(tmp_path: Path) -> None:
    servers: dict[str, Any] = {
        "fs": fs.build_server(tmp_path, [tmp_path]),
        "shell": shell.build_server(tmp_path),
        "summon": summon.build_server(object()),  # type: ignore[arg-type]  # listing never touches the link
        "web": web.build_server(WebPolicy()),
    }
    listed = {s.name: s.tools for s in BUILTIN_SERVERS if s.tools is not None}
    assert set(listed) == set(servers)
    for kind, server in servers.items():
        async with Client(server) as client:
            names = {t.name for t in (await client.list_tools()).tools}
        assert set(listed[kind] or ()) == names, kind


def test_later_directories_win_and_the_cli_lists_sources(tmp_path: Path) -> None:
    template(global_dir() / "templates", "coder", "description: the user's coder\ntools: {fs: true}\n")
    template(global_dir() / "templates", "scout", "description: looks around\n")
    mine = project_template(tmp_path, "coder", "description: the project's coder\ntools: {fs: true, shell: true}\n")

    catalog = Catalog.load(tmp_path)

    coder = catalog.templates["coder"]
    assert coder.template.description == "the project's coder"
    assert coder.source.path == str(mine)
    assert coder.replaced[1] == "~/.config/dispatch/templates/coder.yaml"
    assert coder.replaced[0].endswith("configs/templates/coder.yaml")
    assert catalog.templates["scout"].template.tools is None
    listed = CliRunner().invoke(app, ["templates", "--root", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    section = ("\n" + listed.output).split("\ncoder\n")[1].split("\ndispatch\n")[0]
    assert f"file         {mine}" in section
    assert "overrides    ~/.config/dispatch/templates/coder.yaml" in section


def test_a_project_template_with_a_built_in_name_overrides_it_field_by_field(tmp_path: Path) -> None:
    builtin = Catalog.builtin().templates["dispatch"].template
    project_template(tmp_path, "dispatch", "model: light\ntools: {shell: false}\n")

    mine = Catalog.load(tmp_path).templates["dispatch"].template

    assert mine.model == "light"
    assert mine.instructions == builtin.instructions, "the built-in instructions stay"
    assert mine.description == builtin.description
    assert mine.tools is not None and builtin.tools is not None
    assert mine.tools.allowed("shell") == (), "the project turned shell off"
    assert mine.tools.allowed("summon") == builtin.tools.allowed("summon"), "the other tools stay as built in"


def test_a_bad_field_in_an_override_names_the_overriding_file(tmp_path: Path) -> None:
    mine = project_template(tmp_path, "dispatch", "max_children: 0\n")
    with pytest.raises(ConfigError) as refused:
        Catalog.load(tmp_path)
    assert str(refused.value).startswith(f"{mine} line 1: max_children:"), str(refused.value)


def test_a_malformed_template_names_file_line_field_and_expectation(tmp_path: Path) -> None:
    bad = project_template(
        tmp_path,
        "sloppy",
        "description: sloppy\ntools:\n  fs: [read_file, write_files]\n  shell: sometimes\nmax_children: 0\n"
        "children: [coder, {name: helper, tools: {web: 3}}]\nsklls: [report]\n",
    )

    with pytest.raises(ConfigError) as raised:
        Catalog.load(tmp_path)

    assert str(raised.value).splitlines() == [
        f"{bad} line 3: tools.fs: unknown fs tool 'write_files'; expected some of: "
        "read_file, write_file, edit_file, list_dir, glob, grep",
        f"{bad} line 4: tools.shell: expected true, false or a list of shell tool names, got 'sometimes'",
        f"{bad} line 5: max_children: expected greater than or equal to 1, got 0",
        f"{bad} line 6: children[1].tools.web: expected true, false or a list of web tool names, got 3",
        f"{bad} line 7: sklls: unknown field; expected one of: name, description, instructions, model, tools, "
        "skills, children, max_children, checkpoints, detached, isolation, placement, budget_usd, max_tokens, "
        "max_steps",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("children: [coder, ghost]\n", "line 1: children[1]: no template named 'ghost'; expected one of: "),
        ("skills: [report, missing-skill]\n", "line 1: skills[1]: no skill named 'missing-skill'"),
        ("name: 'bad name'\n", "line 1: name: String should match pattern"),
    ],
)
def test_template_references_are_checked_at_load(tmp_path: Path, text: str, expected: str) -> None:
    bad = project_template(tmp_path, "refs", text)

    with pytest.raises(ConfigError) as raised:
        Catalog.load(tmp_path)

    assert str(raised.value).startswith(f"{bad} {expected}")


def test_dispatch_run_with_a_malformed_template_starts_nothing(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    bad = project_template(tmp_path, "reviewer", "tools:\n  fs: read-only\n")

    done = dispatch("run", "[never] x", "-m", MODEL, "--root", str(tmp_path), "--template", "reviewer")

    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {bad} line 2: tools.fs: expected true, false or a list of fs tool names, got 'read-only'"
    )
    assert "Traceback" not in done.stdout + done.stderr
    assert scripted_llm.requests == []


def test_dispatch_run_with_a_template_runs_the_top_agent_as_that_role(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    scripted_llm.script("[cli-review]", [Reply(text="Looks fine.")])

    done = dispatch("run", "[cli-review] check", "-m", MODEL, "--root", str(tmp_path), "--template", "reviewer")
    unknown = dispatch("run", "x", "-m", MODEL, "--root", str(tmp_path), "--template", "nobody")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Looks fine."
    request = scripted_llm.requests_for("[cli-review]")[0]
    assert INBOX_TOOLS | {"read_file", "list_dir", "glob", "grep", "run"} <= set(request.tool_names)
    assert not {"write_file", "edit_file", "summon"} & set(request.tool_names)
    assert "You are a reviewer" in request.messages[0]["content"]
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: no template named 'nobody'")


# ---- role-scoped tools ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_reviewer_child_cannot_see_or_call_write_file(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('hi')\n")
    scripted_llm.script(
        "[boss]",
        [
            Reply(tool_calls=[call("summon", task="[rev] review app.py", template="reviewer", scope=["app.py"])]),
            Reply(tool_calls=[call("summon", task="[rev] review app.py", template="reviewer", wait=True)]),
            Reply(text="reviewed"),
        ],
    )
    scripted_llm.script(
        "[rev]",
        [
            Reply(
                tool_calls=[
                    call("write_file", path="app.py", content="hacked\n"),
                    call("edit_file", path="app.py", old="hi", new="bye"),
                    call("read_file", path="app.py"),
                ]
            ),
            Reply(text="app.py prints hi; no findings"),
        ],
    )

    async with make_tree(tmp_path) as tree:
        top = await tree.run(top_spec("[boss] get a review"))

    assert_done(top)
    assert (
        "template 'reviewer' cannot write files; summon it without a scope"
        in tool_messages(scripted_llm.requests_for("[boss]")[1].messages)[0]
    )
    first, second = scripted_llm.requests_for("[rev]")
    assert set(first.tool_names) == INBOX_TOOLS | {"read_file", "list_dir", "glob", "grep", "run"}
    wrote, edited, read = tool_messages(second.messages)
    assert wrote.startswith("Error: write_file is not one of your tools (refused)")
    assert edited.startswith("Error: edit_file is not one of your tools (refused)")
    assert "print('hi')" in read
    assert (tmp_path / "app.py").read_text() == "print('hi')\n"
    reviewer = tree.children_of(top.id)[0]
    assert reviewer.spec.template == "reviewer" and reviewer.spec.scope == ()
    assert reviewer.spec.grants.tools == {"fs": ("read_file", "list_dir", "glob", "grep")}
    assert [s.skill.ref for s in reviewer.loaded_skills] == ["builtin:review", "builtin:report"]


@pytest.mark.anyio
async def test_a_template_asking_for_more_than_its_parent_is_refused(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    parent = Grants(summon=True, write=("src",), tools={"fs": ("read_file", "write_file", "grep")})
    scripted_llm.script(
        "[lean]",
        [
            Reply(
                tool_calls=[
                    call("summon", task="[c1] code", template="coder", scope=["src/a"]),
                    call("summon", task="[r1] research", template="researcher"),
                    call("summon", task="[c2] code", template="coder", scope=["src/b"], grants={"web": True}),
                    call("summon", task="[x] code", template="ghost"),
                ]
            ),
            Reply(text="nothing started"),
        ],
    )

    async with make_tree(tmp_path) as tree:
        top = await tree.run(top_spec("[lean] try templates", grants=parent))

    assert_done(top)
    coder, researcher, web, ghost = tool_messages(scripted_llm.requests_for("[lean]")[1].messages)
    assert coder.endswith(
        "summon refused: template 'coder' asks for more than you have: shell: the parent has no shell grant; "
        "lsp: the parent has no lsp grant; fs tools all of them: the parent may use only read_file, write_file, grep"
    )
    assert researcher.endswith(
        "summon refused: template 'researcher' asks for more than you have: "
        "fs tools list_dir, glob: the parent may use only read_file, write_file, grep"
    )
    assert web.endswith("summon refused: grants: template 'coder' has no web; summon it without web: true")
    assert "summon refused: no template named 'ghost'" in ghost
    assert tree.children_of(top.id) == []


@pytest.mark.anyio
async def test_narrowing_a_template_in_the_request_is_allowed(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    parent = Grants(summon=True, web=True, write=("src",))
    scripted_llm.script(
        "[narrow]",
        [
            Reply(
                tool_calls=[
                    call(
                        "summon",
                        task="[c] code",
                        template="coder",
                        scope=["src"],
                        grants={"shell": False, "lsp": False},
                    ),
                    call("summon", task="[r] research", template="researcher", grants={"web": True}),
                ]
            ),
            Reply(tool_calls=[call("wait")]),
            Reply(text="both done"),
        ],
    )
    scripted_llm.script("[c]", [Reply(text="coded")])
    scripted_llm.script("[r]", [Reply(text="researched")])

    async with make_tree(tmp_path) as tree:
        top = await tree.run(top_spec("[narrow] ok", grants=parent))

    assert_done(top)
    coder, researcher = tree.children_of(top.id)
    assert (coder.spec.grants.shell, coder.spec.grants.lsp, coder.spec.scope) == (False, False, ("src",))
    assert researcher.spec.grants.web is True
    assert set(scripted_llm.requests_for("[r]")[0].tool_names) == INBOX_TOOLS | {
        "read_file",
        "list_dir",
        "glob",
        "grep",
        "fetch",
        "search",
    }
    assert set(scripted_llm.requests_for("[c]")[0].tool_names) == INBOX_TOOLS | set(FS.tools or ())


def test_excess_over_compares_tool_lists() -> None:
    parent = Grants(shell=True, tools={"fs": ("read_file", "grep"), "shell": ()})

    assert Grants(tools={"fs": ("grep",)}).excess_over(parent) == []
    assert Grants(tools={"fs": ()}).excess_over(parent) == []  # no fs at all is narrower still
    assert Grants().excess_over(parent) == ["fs tools all of them: the parent may use only read_file, grep"]
    shell_too = Grants(shell=True, tools={"fs": ("grep",)})
    assert shell_too.excess_over(parent) == ["shell tools all of them: the parent may use only none"]
    assert Grants(web=True, tools=parent.tools).excess_over(parent) == ["web: the parent has no web grant"]


# ---- child templates and concurrency -------------------------------------------------------------

FANOUT = """\
description: splits work into parts for inline workers, two at a time
instructions: Split the work.
tools: {fs: true, summon: true}
max_children: 2
children:
  - name: worker
    description: writes one file
    instructions: Write exactly the file you are asked for.
    tools: {fs: [read_file, write_file]}
    skills: [report]
"""


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end before a start at the same instant)."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in points:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.anyio
async def test_max_children_two_never_runs_more_than_two(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    project_template(tmp_path, "fanout", FANOUT)
    parts = "abcd"
    summons = [call("summon", task=f"[w-{p}] write {p}.txt", template="worker", scope=[f"{p}.txt"]) for p in parts]

    def final(request: RecordedRequest) -> Reply:
        return Reply(
            text=json.dumps(sorted(c["name"] for c in json.loads(tool_messages(request.messages)[-1])["finished"]))
        )

    scripted_llm.script("[fanout]", [Reply(tool_calls=summons), Reply(tool_calls=[call("wait")]), final])
    for p in parts:
        scripted_llm.script(
            f"[w-{p}]",
            [Reply(tool_calls=[call("write_file", path=f"{p}.txt", content=p)], delay_s=0.3), Reply(text=f"wrote {p}")],
        )
    catalog = Catalog.load(tmp_path)

    async with AgentTree(tmp_path, LiteLLMClient(), catalog=catalog) as tree:
        top = await tree.run(catalog.top_spec("[fanout] four parts", model=MODEL, template="fanout"))

    assert_done(top)
    assert all((tmp_path / f"{p}.txt").read_text() == p for p in parts)
    intervals: list[tuple[float, float]] = []
    for p in parts:
        requests = scripted_llm.requests_for(f"[w-{p}]")
        assert len(requests) == 2 and all(r.finished_at is not None for r in requests)
        intervals.append((requests[0].started_at, max(r.finished_at or 0.0 for r in requests)))
    assert max_overlap(intervals) == 2, intervals
    workers = tree.children_of(top.id)
    assert {w.spec.template for w in workers} == {"fanout/worker"}
    assert set(scripted_llm.requests_for("[w-a]")[0].tool_names) == INBOX_TOOLS | {"read_file", "write_file"}
    assert "Write exactly the file you are asked for." in scripted_llm.requests_for("[w-a]")[0].messages[0]["content"]
    assert top.spec.max_children == 2


@pytest.mark.anyio
async def test_a_template_limits_which_templates_its_agents_summon(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    project_template(tmp_path, "lead", "tools: {fs: true, summon: true}\nchildren: [researcher]\n")
    scripted_llm.script(
        "[lead]",
        [
            Reply(tool_calls=[call("templates")]),
            Reply(
                tool_calls=[
                    call("summon", task="[no] code", template="coder", scope=["x"]),
                    call("summon", task="[yes] look", template="researcher", wait=True),
                ]
            ),
            Reply(text="done"),
        ],
    )
    scripted_llm.script("[yes]", [Reply(text="found it")])
    catalog = Catalog.load(tmp_path)

    async with AgentTree(tmp_path, LiteLLMClient(), catalog=catalog) as tree:
        top = await tree.run(catalog.top_spec("[lead] go", model=MODEL, template="lead"))

    assert_done(top)
    listed, refused, waited = tool_messages(scripted_llm.requests_for("[lead]")[2].messages)
    assert listed == (
        "- researcher: Answers a question by reading and searching the project (and the web when its parent "
        "grants it); cites files and lines for every claim. [tools: fs[read_file,list_dir,glob,grep] web]"
    )
    assert refused.endswith("summon refused: your template 'lead' may summon only these templates: researcher")
    assert "found it" in waited


@pytest.mark.anyio
async def test_planner_child_is_detached_with_its_checkpoint(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script(
        "[top]",
        [Reply(tool_calls=[call("summon", task="[plan] plan it", template="planner", wait=True)]), Reply(text="ok")],
    )
    scripted_llm.script("[plan]", [Reply(text="the plan")])

    async with make_tree(tmp_path) as tree:
        top = await tree.run(top_spec("[top] plan"))

    assert_done(top)
    planner = tree.children_of(top.id)[0]
    assert planner.spec.detached and planner.spec.checkpoints == {"before_report": CheckpointMode(mode="ask")}
    assert planner.spec.grants.summon and not planner.spec.grants.shell and not planner.spec.grants.web
    tools = set(scripted_llm.requests_for("[plan]")[0].tool_names)
    assert {"ask_user", "summon", "wait", "read_file"} <= tools and "write_file" not in tools
