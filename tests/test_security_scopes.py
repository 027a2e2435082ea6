"""Scopes and read grants against a hostile model: a scope reached through a symlink, read grants
in the fs tools and the shell, scopes that do not exist yet, and what a refused write leaves.

Cases about summoning run a real agent tree whose parent and child the scripted model plays;
the others drive the servers through real MCP sessions, built as the hub builds them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from mcp import Client

from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.llm.client import LiteLLMClient
from dispatch.hub.policy.grants import Grants
from dispatch.servers import shell
from dispatch.servers._base import MCPServer
from dispatch.servers.fs import server as fs
from dispatch.servers.sandbox import SandboxLauncher, SandboxProbe
from tests.agent_helpers import assert_done, call, tool_messages, top_spec
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.sandbox_helpers import (
    PROBE,
    absent,
    fs_server,
    needs_bwrap,
    needs_landlock,
    run,
    sandboxed_shell,
    snapshot,
    tool,
)

pytestmark = pytest.mark.anyio

SECRET = "sibling-secret-do-not-leak"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "a").mkdir(parents=True)
    (root / "a" / "notes.txt").write_text("notes of a\n")
    (root / "b").mkdir()
    (root / "b" / "secret.txt").write_text(SECRET + "\n")
    return root


def shell_server(root: Path, write: Sequence[Path], read: Sequence[Path] | None, probe: SandboxProbe) -> MCPServer:
    """A shell server sandboxed as the hub builds one for an agent with these grants."""
    return shell.build_server(root, launcher=SandboxLauncher.create(root, write, probe, read=read))


# ---- a scope through a symlink ------------------------------------------------------------------


@needs_bwrap
async def test_a_scope_through_a_symlink_out_of_the_parents_scope_is_refused(
    scripted_llm: ScriptedLLM, project: Path
) -> None:
    scripted_llm.script(
        "[parent]",
        [
            Reply(tool_calls=[call("run", command="ln -s ../b a/link && echo linked")]),
            Reply(tool_calls=[call("summon", task="[kid] write into the link", scope=["a/link"])]),
            Reply(text="parent done"),
        ],
    )
    before = snapshot(project / "b")
    async with AgentTree(project, LiteLLMClient()) as tree:
        parent = await tree.run(top_spec("[parent] go", grants=Grants(shell=True, summon=True, write=("a",))))
    assert_done(parent)
    refusal = tool_messages(scripted_llm.requests_for("[parent]")[2].messages)[-1]
    assert "write scope 'a/link' (it resolves to 'b') is outside your own write scope ('a')" in refusal
    assert tree.children_of(parent.id) == []
    assert snapshot(project / "b") == before


async def test_a_scope_through_a_symlink_cannot_overlap_a_running_sibling(
    scripted_llm: ScriptedLLM, project: Path
) -> None:
    os.symlink("../b", project / "a" / "link")
    scripted_llm.script(
        "[parent]",
        [
            Reply(tool_calls=[call("summon", task="[one] hold b", scope=["b"], name="one")]),
            Reply(tool_calls=[call("summon", task="[two] write b through a/link", scope=["a/link"], name="two")]),
            Reply(tool_calls=[call("wait")]),
            Reply(text="parent done"),
        ],
    )
    scripted_llm.script("[one]", [Reply(text="one done", delay_s=3)])  # running while its sibling is summoned
    async with AgentTree(project, LiteLLMClient()) as tree:
        parent = await tree.run(top_spec("[parent] go", grants=Grants(summon=True, write=(".",))))
    assert_done(parent)
    one = tree.children_of(parent.id)[0]
    refusal = tool_messages(scripted_llm.requests_for("[parent]")[2].messages)[-1]
    assert f"write scope 'a/link' (it resolves to 'b') overlaps the scope 'b' of running sibling {one.id}" in refusal
    assert [c.spec.name for c in tree.children_of(parent.id)] == ["one"]


@needs_bwrap
async def test_a_scope_swapped_for_a_symlink_after_the_sandbox_was_made_is_not_bound(project: Path) -> None:
    before = snapshot(project / "b")
    async with Client(sandboxed_shell(project, write=[project / "a"])) as c:
        assert "ok" in await run(c, "echo ok > a/first.txt && echo ok")
        (project / "a").rename(project / "a-old")  # the parent relinks the child's scope
        os.symlink("b", project / "a")
        text = await run(c, "echo pwned > a/pwned.txt; echo done")
    assert "done" in text
    assert absent(project / "b" / "pwned.txt")
    assert snapshot(project / "b") == before


# ---- read grants --------------------------------------------------------------------------------


@needs_bwrap
async def test_a_child_granted_read_paths_reads_nothing_else_with_fs_or_shell(
    scripted_llm: ScriptedLLM, project: Path
) -> None:
    scripted_llm.script(
        "[parent]",
        [
            Reply(
                tool_calls=[
                    call("summon", task="[reader] read", grants={"read": ["a"], "shell": True}, scope=[], wait=True)
                ]
            ),
            Reply(text="parent done"),
        ],
    )
    hostile = [
        call("read_file", path="b/secret.txt"),
        call("grep", pattern="secret", path="."),
        call("glob", pattern="**/*.txt"),
        call("list_dir", path="b"),
        call("run", command="cat b/secret.txt; cat $PWD/b/secret.txt; grep -r secret . ; ls -a; echo end"),
        call("read_file", path="a/notes.txt"),
        call("run", command="cat a/notes.txt"),
    ]
    scripted_llm.script("[reader]", [Reply(tool_calls=hostile), Reply(text="reader done")])
    async with AgentTree(project, LiteLLMClient()) as tree:
        parent = await tree.run(top_spec("[parent] go"))
    assert_done(parent)
    results = tool_messages(scripted_llm.requests_for("[reader]")[1].messages)
    assert all(SECRET not in r for r in results), results
    read, grep, glob, listing, shell_out, notes, cat_notes = results
    assert "outside this agent's read paths (a)" in read
    assert "outside this agent's read paths (a)" in grep and "outside this agent's read paths (a)" in listing
    assert "a/notes.txt" in glob and "b/secret.txt" not in glob
    assert "end" in shell_out and "No such file" in shell_out
    assert "notes of a" in notes and "notes of a" in cat_notes


@needs_landlock
async def test_with_landlock_alone_the_shell_reads_only_the_read_paths(project: Path) -> None:
    alone = SandboxProbe(landlock_abi=PROBE.landlock_abi, pids_cgroup=PROBE.pids_cgroup)
    async with Client(shell_server(project, [], [project / "a"], alone)) as c:
        text = await run(c, "cat b/secret.txt; cat a/notes.txt; echo end")
    assert SECRET not in text
    assert "notes of a" in text and "Permission denied" in text


async def test_the_fs_tools_refuse_reads_outside_the_read_paths_even_through_a_symlink(project: Path) -> None:
    os.symlink("../b/secret.txt", project / "a" / "peek.txt")
    server = fs.build_server(project, [], read=[project / "a"])
    async with Client(server) as c:
        text, is_error = await tool(c, "read_file", path="a/peek.txt")
        grep, _ = await tool(c, "grep", pattern="secret", path="a")
    assert is_error and SECRET not in text and "resolves to 'b/secret.txt'" in text
    assert SECRET not in grep


# ---- scopes that do not exist yet ---------------------------------------------------------------


@needs_bwrap
async def test_a_child_can_create_its_missing_scope_paths_with_fs_and_shell_and_nothing_beside(
    scripted_llm: ScriptedLLM, project: Path
) -> None:
    scope = ["pkg/new/mod.py", "hello.py", "src/newpkg", ".mcp.json"]
    scripted_llm.script(
        "[parent]",
        [
            Reply(tool_calls=[call("summon", task="[maker] make", scope=scope, grants={"shell": True}, wait=True)]),
            Reply(text="parent done"),
        ],
    )
    work = [
        call("write_file", path="pkg/new/mod.py", content="x = 1\n"),
        call("run", command="mkdir -p pkg/new && echo 'print(1)' > hello.py && echo y > src/newpkg/y.py && echo ok"),
        call("write_file", path="pkg/other/z.py", content="no\n"),
        call("run", command="mkdir -p pkg/other; echo no > pkg/beside.py; echo end"),
    ]
    scripted_llm.script("[maker]", [Reply(tool_calls=work), Reply(text="maker done")])
    async with AgentTree(project, LiteLLMClient()) as tree:
        parent = await tree.run(top_spec("[parent] go"))
    assert_done(parent)
    wrote, ran, beside, ran_beside = tool_messages(scripted_llm.requests_for("[maker]")[1].messages)
    assert "created 'pkg/new/mod.py'" in wrote or "replaced 'pkg/new/mod.py'" in wrote
    assert ran.rstrip().endswith("ok"), ran
    assert (project / "pkg" / "new" / "mod.py").read_text() == "x = 1\n"
    assert (project / "hello.py").read_text() == "print(1)\n"
    assert (project / "src" / "newpkg" / "y.py").read_text() == "y\n"
    assert "outside the writable paths" in beside and "end" in ran_beside
    assert sorted(p.name for p in (project / "pkg").iterdir()) == ["new"]
    assert absent(project / ".mcp.json")  # an always-denied scope path is not made


async def test_fs_makes_the_missing_folders_of_a_scope_and_no_others(project: Path) -> None:
    async with Client(fs_server(project, write=[project / "pkg" / "new" / "mod.py"])) as c:
        made, made_error = await tool(c, "write_file", path="pkg/new/mod.py", content="x = 1\n")
        other, other_error = await tool(c, "write_file", path="pkg/other/x.py", content="no\n")
    assert not made_error, made
    assert (project / "pkg" / "new" / "mod.py").read_text() == "x = 1\n"
    assert other_error and "outside the writable paths" in other
    assert absent(project / "pkg" / "other")


async def test_a_refused_or_failed_write_leaves_no_folders_it_made(project: Path) -> None:
    async with Client(fs_server(project)) as c:
        edit, edit_error = await tool(c, "edit_file", path="new/deep/x.py", old="a", new="b")
        hooks, hooks_error = await tool(c, "write_file", path="nested/.git/config", content="[core]\n")
    assert edit_error and "not found" in edit
    assert hooks_error and "always denied" in hooks
    assert absent(project / "new") and absent(project / "nested")
