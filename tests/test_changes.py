"""Changes you can see, review and undo: every agent's writes (fs tools and shell commands alike)
are snapshotted in the data directory's shadow store, read back as a diff per agent (its
descendants' too, or its own alone), and rewound, refused when someone changed a file since.

A real hub with the in-process scripted model, real MCP sessions, shell commands under the real
sandbox, and the real ``git`` for the user's repository, which must come out untouched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from mcp import Client
from mcp_types import TextContent

from dispatch.hub.api.app import create_app
from dispatch.hub.api.auth import load_or_create_token
from dispatch.hub.cli.changes import coloured
from dispatch.hub.errors import ConflictError, UserError
from dispatch.hub.llm.scripted import RecordedRequest, Reply, ScriptedModel
from dispatch.hub.mcp.tools import build_server
from dispatch.hub.service.hub import Hub
from tests.agent_helpers import call
from tests.api_helpers import hub_in_a_thread, served_in_process
from tests.hub_helpers import MODEL, dirs
from tests.sandbox_helpers import needs_bwrap

pytestmark = pytest.mark.anyio

IDENTITY = ("-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false")


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *IDENTITY, *args], cwd=root, capture_output=True, text=True, check=True)
    return done.stdout


def user_repository(root: Path) -> None:
    """The user's own repository: a commit, a staged change, a stash and an untracked file."""
    (root / "a").mkdir()
    (root / "b").mkdir()
    (root / "a" / "one.py").write_text("one = 1\n")
    (root / "b" / "two.py").write_text("two = 2\n")
    (root / "README.md").write_text("# project\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "start")
    (root / "README.md").write_text("# project\nstashed\n")
    git(root, "stash", "-q")
    (root / "README.md").write_text("# project\nstaged\n")
    git(root, "add", "README.md")
    (root / "notes.txt").write_text("the user's notes\n")


def git_state(root: Path) -> dict[str, Any]:
    """What the user sees of their repository: status, index, stash, refs, hooks, config."""
    return {
        "status": git(root, "status", "--porcelain=v2", "--untracked-files=all"),
        "index": (root / ".git" / "index").read_bytes(),
        "stash": git(root, "stash", "list", "-p"),
        "refs": git(root, "show-ref"),
        "config": (root / ".git" / "config").read_text(),
        "hooks": sorted(p.name for p in (root / ".git" / "hooks").iterdir()),
    }


def two_children(model: ScriptedModel, *, shell: bool) -> None:
    """A top agent summoning two children with disjoint scopes: one edits ``a/one.py`` and adds
    ``a/new.py`` with fs tools; the other rewrites ``b/two.py`` with a shell command (or fs)."""
    grants = {"shell": True} if shell else {}
    model.script(
        "[top]",
        [
            Reply(
                tool_calls=[
                    call("summon", task="[child-a] edit a", scope=["a"], wait=False),
                    call("summon", task="[child-b] edit b", scope=["b"], grants=grants, wait=False),
                ]
            ),
            Reply(tool_calls=[call("wait")]),
            Reply(tool_calls=[call("wait")]),
            Reply(text="both done"),
        ],
    )
    model.script(
        "[child-a]",
        [
            Reply(tool_calls=[call("edit_file", path="a/one.py", old="one = 1", new="one = 'one'")]),
            Reply(tool_calls=[call("write_file", path="a/new.py", content="new = True\n")]),
            Reply(text="a done"),
        ],
    )
    b_write = (
        call("run", command="printf 'two = 22\\nmore = 3\\n' > b/two.py && rm -f b/gone.txt")
        if shell
        else call("write_file", path="b/two.py", content="two = 22\nmore = 3\n")
    )
    model.script("[child-b]", [Reply(tool_calls=[b_write]), Reply(text="b done")])


async def run_top(hub: Hub) -> tuple[str, str, str]:
    """Run the top agent to its report; the ids of it and of its children a and b."""
    top = await hub.start("[top] change a and b", model=MODEL)
    done = await hub.wait_finished(top.id)
    assert done.state == "done", done
    views = {v.task.split()[0]: v for v in await hub.agents()}
    return top.id, views["[child-a]"].id, views["[child-b]"].id


@needs_bwrap
async def test_each_childs_changes_are_its_own_and_the_parents_hold_both(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    user_repository(root)
    (root / "b" / "gone.txt").write_text("to be removed\n")
    before = git_state(root)
    model = ScriptedModel()
    two_children(model, shell=True)
    with model:
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            top, a, b = await run_top(hub)
            child_a = await hub.changes(a)
            child_b = await hub.changes(b)
            parent = await hub.changes(top)
            parent_own = await hub.changes(top, own=True)

    files = {f.path: (f.status, f.additions, f.deletions) for f in child_a.files}
    assert files == {"a/one.py": ("modified", 1, 1), "a/new.py": ("added", 1, 0)}
    assert "-one = 1\n+one = 'one'\n" in child_a.diff and "+new = True\n" in child_a.diff
    assert "two.py" not in child_a.diff
    files = {f.path: (f.status, f.additions, f.deletions) for f in child_b.files}  # a shell command's writes
    assert files == {"b/two.py": ("modified", 2, 1), "b/gone.txt": ("deleted", 0, 1)}
    assert "+more = 3\n" in child_b.diff and "one.py" not in child_b.diff
    assert parent.agent_id == top
    assert {f.path for f in parent.files} == {"a/one.py", "a/new.py", "b/two.py", "b/gone.txt"}
    assert parent_own.files == [] and parent_own.diff == ""
    after = git_state(root)
    assert {k: v for k, v in after.items() if k != "status"} == {k: v for k, v in before.items() if k != "status"}
    assert not (root / ".git" / "dispatch-index").exists()
    assert list((data / "changes").iterdir()), "the shadow store lives in the data directory"


async def test_the_users_git_status_index_and_stash_are_untouched(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    user_repository(root)
    hook = root / ".git" / "hooks" / "pre-commit"
    hook.write_text('#!/bin/sh\ntouch "$GIT_DIR/../hook-ran"\n')
    hook.chmod(0o755)
    git(root, "config", "core.hooksPath", ".git/hooks")
    before = git_state(root)
    model = ScriptedModel()
    two_children(model, shell=False)
    with model:
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            top, a, _ = await run_top(hub)
            assert {f.path for f in (await hub.changes(top)).files} == {"a/one.py", "a/new.py", "b/two.py"}
            await hub.rewind(a)
            await hub.rewind(a, undo=True)
    after = git_state(root)
    assert after["index"] == before["index"] and after["stash"] == before["stash"]
    assert after["refs"] == before["refs"] and after["config"] == before["config"]
    assert after["hooks"] == before["hooks"] and not (root / "hook-ran").exists()
    changed = {line.split()[-1] for line in after["status"].splitlines()} - {
        line.split()[-1] for line in before["status"].splitlines()
    }
    assert changed == {"a/one.py", "a/new.py", "b/two.py"}  # the agents' edits, nothing of the store


async def test_rewinding_one_child_restores_its_files_and_leaves_its_siblings(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    user_repository(root)
    model = ScriptedModel()
    two_children(model, shell=False)
    with model:
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            top, a, _ = await run_top(hub)
            rewound = await hub.rewind(a)
            assert sorted(rewound.files) == ["a/new.py", "a/one.py"]
            assert (root / "a" / "one.py").read_text() == "one = 1\n"
            assert not (root / "a" / "new.py").exists()
            assert (root / "b" / "two.py").read_text() == "two = 22\nmore = 3\n"
            assert (await hub.changes(a)).files == []
            assert {f.path for f in (await hub.changes(top)).files} == {"b/two.py"}

            undone = await hub.rewind(a, undo=True)  # a rewind is itself undoable
            assert undone.undone and undone.rewind_id == rewound.rewind_id
            assert (root / "a" / "one.py").read_text() == "one = 'one'\n"
            assert (root / "a" / "new.py").read_text() == "new = True\n"
            assert {f.path for f in (await hub.changes(a)).files} == {"a/one.py", "a/new.py"}
            with pytest.raises(UserError, match=f"agent {a} has no rewind to undo"):
                await hub.rewind(a, undo=True)

            await hub.rewind(top)  # the parent's rewind puts back its descendants' work
            assert (root / "b" / "two.py").read_text() == "two = 2\n"
            assert (root / "a" / "one.py").read_text() == "one = 1\n"
            assert git(root, "status", "--porcelain", "a", "b") == ""


async def test_a_rewind_over_the_users_later_edit_is_refused_naming_the_file(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    user_repository(root)
    model = ScriptedModel()
    two_children(model, shell=False)
    with model:
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            _, a, _ = await run_top(hub)
            (root / "a" / "one.py").write_text("one = 'the user's'\n")
            with pytest.raises(ConflictError, match=f"not rewound: a/one.py changed since agent {a} last wrote it"):
                await hub.rewind(a)
            assert (root / "a" / "new.py").exists(), "a refused rewind changes nothing"
            await hub.rewind(a, force=True)
            assert (root / "a" / "one.py").read_text() == "one = 1\n"
            assert not (root / "a" / "new.py").exists()


async def test_changes_are_kept_in_the_store_and_read_back_after_a_restart(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    user_repository(root)
    model = ScriptedModel()
    two_children(model, shell=False)
    with model:
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            top, a, _ = await run_top(hub)
            seen = await hub.changes(top)
    async with Hub.open(root, data, model=ScriptedModel(), default_model=MODEL) as hub:
        assert "m109_file_changes" in hub.store.applied_migrations()
        assert await hub.changes(top) == seen
        assert sorted((await hub.rewind(a)).files) == ["a/new.py", "a/one.py"]
    assert (root / "a" / "one.py").read_text() == "one = 1\n"


@needs_bwrap
async def test_a_large_project_and_a_command_writing_many_files_are_tracked_whole(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    for index in range(300):  # the first snapshot takes them all at once (one pack)
        folder = root / "src" / f"m{index // 50}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index}.py").write_text(f"value = {index}\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    model = ScriptedModel()
    command = "mkdir gen && for i in $(seq 250); do echo $i > gen/f$i.txt; done && echo changed > src/m0/f0.py"
    model.script("[many]", [Reply(tool_calls=[call("run", command=command)]), Reply(text="done")])
    with model:
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            agent = await hub.start("[many] generate", model=MODEL)
            assert (await hub.wait_finished(agent.id)).state == "done"
            found = await hub.changes(agent.id)
            statuses = {f.path: f.status for f in found.files}
            assert len(statuses) == 251 and statuses["src/m0/f0.py"] == "modified"
            assert statuses["gen/f250.txt"] == "added" and "+250\n" in found.diff
            assert len((await hub.rewind(agent.id)).files) == 251
            assert (await hub.changes(agent.id)).files == []
    assert not (root / "gen" / "f1.txt").exists() and (root / "src" / "m0" / "f0.py").read_text() == "value = 0\n"
    assert (root / "run.sh").stat().st_mode & 0o100, "files the agent did not touch keep their mode"


# -- the command line ------------------------------------------------------------------------------

DISPATCH = [sys.executable, "-m", "dispatch.hub.cli"]


def dispatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DISPATCH, *args], capture_output=True, text=True, timeout=120, check=False)


def test_dispatch_diff_and_rewind_go_through_the_running_hub(tmp_path: Path) -> None:
    root, data = tmp_path / "project", tmp_path / "data"
    root.mkdir()
    user_repository(root)
    model = ScriptedModel()
    two_children(model, shell=False)
    with model, hub_in_a_thread(tmp_path, model) as (portal, hub):
        top, a, _ = portal.call(run_top, hub)
        app = create_app(hub, token=load_or_create_token(data))
        with served_in_process(portal, app) as url:
            hub.advertise(url)
            shown = dispatch("diff", a, "--data-dir", str(data))
            assert shown.returncode == 0, shown.stderr
            assert shown.stdout == portal.call(lambda: hub.changes(a)).diff  # no colour into a pipe
            assert "+new = True\n" in shown.stdout and "\x1b[" not in shown.stdout
            own = dispatch("diff", top, "--own", "--data-dir", str(data))
            assert own.returncode == 0 and own.stdout == ""
            assert own.stderr.strip() == f"agent {top} has changed no files"

            (root / "a" / "one.py").write_text("one = 'the user's'\n")
            refused = dispatch("rewind", a, "--data-dir", str(data))
            assert refused.returncode == 2
            assert refused.stderr.strip().splitlines() == [
                f"error: not rewound: a/one.py changed since agent {a} last wrote it; rewind with force "
                '(API: {"force": true}, CLI: --force) to overwrite'
            ]
            forced = dispatch("rewind", a, "--force", "--data-dir", str(data))
            assert forced.returncode == 0, forced.stderr
            assert forced.stdout.startswith(f"rewound {a}: 2 files put back (a/new.py, a/one.py)")
            assert (root / "a" / "one.py").read_text() == "one = 1\n"
            undone = dispatch("rewind", a, "--undo", "--data-dir", str(data))
            assert undone.returncode == 0 and undone.stdout.startswith("undid rewind rw-")
            assert (root / "a" / "one.py").read_text() == "one = 'the user's'\n"  # as the rewind found it


async def test_dispatch_diff_and_rewind_work_here_when_no_hub_runs(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    user_repository(root)
    model = ScriptedModel()
    two_children(model, shell=False)
    with model:
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            top, _, b = await run_top(hub)
            expected = (await hub.changes(top)).diff
    shown = await anyio.to_thread.run_sync(lambda: dispatch("diff", top, "--data-dir", str(data)))
    assert shown.returncode == 0 and shown.stdout == expected
    rewound = await anyio.to_thread.run_sync(lambda: dispatch("rewind", b, "--data-dir", str(data)))
    assert rewound.returncode == 0, rewound.stderr
    assert (root / "b" / "two.py").read_text() == "two = 2\n"
    unknown = await anyio.to_thread.run_sync(lambda: dispatch("diff", "a-nobody", "--data-dir", str(data)))
    assert unknown.returncode == 2 and unknown.stderr.strip() == "error: no agent has the id 'a-nobody'"


def test_a_diff_is_coloured_line_by_line() -> None:
    diff = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old\n+new\n same\n"
    lines = coloured(diff).splitlines()
    assert lines[0] == "\x1b[1mdiff --git a/x b/x\x1b[0m" and lines[3] == "\x1b[36m@@ -1 +1 @@\x1b[0m"
    assert lines[4] == "\x1b[31m-old\x1b[0m" and lines[5] == "\x1b[32m+new\x1b[0m" and lines[6] == " same"


# -- agents and MCP clients ------------------------------------------------------------------------


async def test_a_parent_reads_its_childrens_changes_in_wait_children_and_child_changes(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    user_repository(root)
    model = ScriptedModel()

    def ask_for_the_diff(request: RecordedRequest) -> Reply:
        waited = json.loads(str(request.messages[-1]["content"]))
        return Reply(tool_calls=[call("child_changes", id=waited["finished"][0]["id"])])

    model.script(
        "[top]",
        [
            Reply(tool_calls=[call("summon", task="[child-a] edit a", scope=["a"], wait=True)]),
            ask_for_the_diff,
            Reply(tool_calls=[call("children")]),
            Reply(text="reviewed"),
        ],
    )
    model.script(
        "[child-a]",
        [
            Reply(tool_calls=[call("edit_file", path="a/one.py", old="one = 1", new="one = 'one'")]),
            Reply(tool_calls=[call("write_file", path="a/new.py", content="new = True\n")]),
            Reply(text="a done"),
        ],
    )
    with model:
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            top = await hub.start("[top] change a", model=MODEL)
            assert (await hub.wait_finished(top.id)).state == "done"
            results = [m["content"] for m in (await hub.agent(top.id)).transcript if m["role"] == "tool"]
            own = await hub.changes(next(v.id for v in await hub.agents() if v.parent_id == top.id))

    counts = {"files": 2, "added": 1, "modified": 1, "deleted": 0, "additions": 2, "deletions": 1}
    assert json.loads(results[0])["finished"][0]["changes"] == counts
    diff = json.loads(results[1])
    assert diff["diff"] == own.diff and {f["path"] for f in diff["files"]} == {"a/one.py", "a/new.py"}
    assert json.loads(results[2])[0]["changes"] == counts


async def mcp_tool(client: Client, name: str, **arguments: Any) -> tuple[bool, str]:
    result = await client.call_tool(name, arguments)
    return result.is_error, "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def test_the_mcp_face_shows_and_rewinds_an_agents_changes(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    user_repository(root)
    model = ScriptedModel()
    two_children(model, shell=False)
    with model:
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub, Client(build_server(hub)) as client:
            top, a, _ = await run_top(hub)
            _, shown = await mcp_tool(client, "changes", agent_id=top, max_chars=40)
            body = json.loads(shown)
            assert {f["path"] for f in body["files"]} == {"a/one.py", "a/new.py", "b/two.py"}
            assert body["truncated"] is True and len(body["diff"]) == 40

            (root / "a" / "new.py").write_text("the user's\n")
            failed, refused = await mcp_tool(client, "rewind", agent_id=a)
            assert failed and f"not rewound: a/new.py changed since agent {a} last wrote it" in refused
            failed, done = await mcp_tool(client, "rewind", agent_id=a, force=True)
            assert not failed and sorted(json.loads(done)["files"]) == ["a/new.py", "a/one.py"]
            assert not (root / "a" / "new.py").exists()


async def test_rewinding_a_running_agent_cancels_it_first(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    (root / "notes.md").write_text("the user's notes\n")
    model = ScriptedModel()
    model.script(
        "[busy]",
        [
            Reply(tool_calls=[call("write_file", path="notes.md", content="rewritten\n")]),
            Reply(text="never given", delay_s=3600),  # a model call that lasts until cancelled
        ],
    )
    with model:
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            agent = await hub.start("[busy] rewrite the notes", model=MODEL)
            while len(model.requests_for("[busy]")) < 2:
                await anyio.sleep(0.01)
            assert hub.view(agent.id).state == "running"
            rewound = await hub.rewind(agent.id)
            assert rewound.files == ["notes.md"] and hub.view(agent.id).state == "cancelled"
            assert (root / "notes.md").read_text() == "the user's notes\n"
