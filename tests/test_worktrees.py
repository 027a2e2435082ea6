"""Worktree isolation: children summoned with ``isolation: worktree`` work in git worktrees of
their own, from the parent's files as they are (uncommitted and untracked ones too), and their
work is merged back when they report: cleanly when it does not conflict, with both versions handed
to the parent (and nothing written) when it does. No worktree or branch outlives the run, nor a
SIGKILL of the hub and a restart; the user's HEAD, index and stash are never touched.

Real git repositories, a real hub with the in-process scripted model and real fs and shell tool
calls; the crash case a real hub process, killed.
"""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from dispatch.hub.llm.scripted import RecordedRequest, Reply, ScriptedModel
from dispatch.hub.service.hub import Hub
from tests.agent_helpers import call, last_tool_json, tool_messages, until
from tests.fakes.scripted_llm import Reply as WireReply
from tests.fakes.scripted_llm import ScriptedLLM
from tests.hub_helpers import MODEL, dirs, start_hub_process
from tests.sandbox_helpers import needs_bwrap
from tests.test_changes import git, user_repository

pytestmark = pytest.mark.anyio

SCOPE = ["a", "notes.txt"]


def repository(root: Path) -> None:
    """The user's repository (a commit, a staged change, a stash, an untracked file) and an
    uncommitted edit of ``a/one.py``."""
    user_repository(root)
    (root / "a" / "one.py").write_text("one = 1\n# the user's own line\n")


def user_state(root: Path) -> dict[str, Any]:
    """What of the user's repository no agent may change: HEAD, index, stash, refs, config, hooks."""
    return {
        "head": git(root, "rev-parse", "HEAD"),
        "index": (root / ".git" / "index").read_bytes(),
        "stash": git(root, "stash", "list", "-p"),
        "refs": git(root, "show-ref"),
        "config": (root / ".git" / "config").read_text(),
        "hooks": sorted(p.name for p in (root / ".git" / "hooks").iterdir()),
    }


def assert_no_leftovers(root: Path, data: Path) -> None:
    worktrees = git(root, "worktree", "list", "--porcelain")
    assert worktrees.count("worktree ") == 1, worktrees
    assert git(root, "branch", "--list", "dispatch/*") == ""
    place = data.parent / f"{data.name}-worktrees"
    assert not place.exists() or list(place.iterdir()) == []
    records = data / "worktrees"
    assert not records.exists() or list(records.iterdir()) == []
    assert not (root / ".git" / "worktrees").exists() or list((root / ".git" / "worktrees").iterdir()) == []


def script_pair(model: ScriptedModel, first: list[Reply], second: list[Reply], seen: dict[str, Any]) -> None:
    """A top agent summoning ``[iso-1]``, then (while it runs: its first step takes a second)
    ``[iso-2]``, both isolated on the same scope, then waiting for both; the last wait's result
    lands in ``seen``."""

    def final(request: RecordedRequest) -> Reply:
        seen.update({c["name"]: c for c in last_tool_json(request.messages)["finished"]})
        return Reply(text="both back")

    summons = [
        call("summon", task=f"[iso-{n}] work", name=f"iso-{n}", scope=SCOPE, isolation="worktree") for n in (1, 2)
    ]
    waits = [Reply(tool_calls=[call("wait")]), Reply(tool_calls=[call("wait")])]
    model.script("[top]", [Reply(tool_calls=summons[:1]), Reply(tool_calls=summons[1:]), *waits, final])
    model.script("[iso-1]", [dataclasses.replace(first[0], delay_s=1.0), *first[1:]])
    model.script("[iso-2]", second)


async def run(root: Path, data: Path, model: ScriptedModel) -> set[str]:
    """Run the top agent to its report; the files its tree's diff names."""
    with model:
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            top = await hub.start("[top] split the work", model=MODEL)
            done = await hub.wait_finished(top.id)
            assert done.state == "done", done
            return {f.path for f in (await hub.changes(top.id)).files}


async def test_two_isolated_children_with_the_same_scope_both_merge_cleanly(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    repository(root)
    before = user_state(root)
    model, seen = ScriptedModel(), dict[str, Any]()
    edit = call("edit_file", path="a/one.py", old="one = 1", new="one = 'one'")
    notes = call("edit_file", path="notes.txt", old="the user's notes", new="the user's notes, read")  # untracked
    script_pair(
        model,
        [Reply(tool_calls=[edit]), Reply(text="one edited")],
        [Reply(tool_calls=[notes]), Reply(tool_calls=[call("write_file", path="a/new.py", content="new = 2\n")]),
         Reply(text="new added")],
        seen,
    )  # fmt: skip
    assert await run(root, data, model) == {"a/one.py", "a/new.py", "notes.txt"}  # the children's, in its diff

    assert (root / "a" / "one.py").read_text() == "one = 'one'\n# the user's own line\n"
    assert (root / "a" / "new.py").read_text() == "new = 2\n"
    assert (root / "notes.txt").read_text() == "the user's notes, read\n"
    assert seen["iso-1"]["merge"] == {"outcome": "merged", "files": ["a/one.py"], "conflicts": []}
    assert seen["iso-2"]["merge"]["outcome"] == "merged"
    assert sorted(seen["iso-2"]["merge"]["files"]) == ["a/new.py", "notes.txt"]
    assert user_state(root) == before
    status = git(root, "status", "--porcelain")
    assert "README.md" in status and "a/one.py" in status  # the user's staged change is still staged
    assert_no_leftovers(root, data)


async def test_an_isolated_childs_merged_changes_are_shown_and_rewound_in_the_parents_tree(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    repository(root)
    model, seen = ScriptedModel(), dict[str, Any]()
    edit = call("edit_file", path="a/one.py", old="one = 1", new="one = 'one'")
    add = call("write_file", path="a/new.py", content="new = 2\n")
    script_pair(model, [Reply(tool_calls=[edit]), Reply(text="1")], [Reply(tool_calls=[add]), Reply(text="2")], seen)
    with model:
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            top = await hub.start("[top] split the work", model=MODEL)
            assert (await hub.wait_finished(top.id)).state == "done"
            ids = {v.name: v.id for v in await hub.agents()}
            first = await hub.changes(ids["iso-1"])
            assert [f.path for f in first.files] == ["a/one.py"] and "+one = 'one'" in first.diff
            rewound = await hub.rewind(ids["iso-1"])
            assert rewound.files == ["a/one.py"]
            assert (root / "a" / "one.py").read_text() == "one = 1\n# the user's own line\n"
            assert (root / "a" / "new.py").read_text() == "new = 2\n"  # the sibling's stays
    assert_no_leftovers(root, data)


async def test_a_conflicting_pair_hands_both_versions_to_the_parent_and_leaves_no_markers(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    repository(root)
    before = user_state(root)
    model, seen = ScriptedModel(), dict[str, Any]()
    script_pair(
        model,
        [Reply(tool_calls=[call("edit_file", path="a/one.py", old="one = 1", new="one = 'first'")]), Reply(text="1")],
        [Reply(tool_calls=[call("edit_file", path="a/one.py", old="one = 1", new="one = 'second'")]), Reply(text="2")],
        seen,
    )
    await run(root, data, model)

    outcomes = {name: child["merge"]["outcome"] for name, child in seen.items()}
    assert sorted(outcomes.values()) == ["conflict", "merged"], outcomes
    merged = next(n for n, o in outcomes.items() if o == "merged")
    conflicted = next(n for n, o in outcomes.items() if o == "conflict")
    won = "first" if merged == "iso-1" else "second"
    lost = "second" if won == "first" else "first"
    text = (root / "a" / "one.py").read_text()
    assert text == f"one = '{won}'\n# the user's own line\n"
    assert "<<<<<<<" not in text and ">>>>>>>" not in text
    [conflict] = seen[conflicted]["merge"]["conflicts"]
    assert conflict["path"] == "a/one.py"
    assert conflict["yours"] == f"one = '{won}'\n# the user's own line\n"
    assert conflict["child"] == f"one = '{lost}'\n# the user's own line\n"
    assert user_state(root) == before
    assert_no_leftovers(root, data)


async def test_a_cancelled_isolated_child_is_discarded_and_its_nested_isolated_child_too(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    repository(root)
    before = user_state(root)
    model, seen = ScriptedModel(), dict[str, Any]()

    def final(request: RecordedRequest) -> Reply:
        seen.update(last_tool_json(request.messages))
        return Reply(text="cancelled it")

    outer = call("summon", task="[iso-out] go", name="out", scope=["a"], grants={"summon": True}, isolation="worktree")
    inner = call("summon", task="[iso-in] work", name="in", scope=["a"], isolation="worktree")
    model.script("[top]", [Reply(tool_calls=[outer]), Reply(tool_calls=[call("wait")]), final])
    model.script("[iso-out]", [Reply(tool_calls=[inner]), Reply(text="never", delay_s=60)])
    model.script("[iso-in]", [Reply(tool_calls=[call("write_file", path="a/x.py", content="x\n")]), Reply(text="in")])
    with model:
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            top = await hub.start("[top] one child", model=MODEL)
            await until(lambda: len(model.requests_for("[iso-out]")) == 2, timeout_s=30)
            await until(
                lambda: any(a.spec.name == "in" and a.state.value == "done" for a in hub.tree.agents.values()), 30
            )
            out_id = next(a.id for a in hub.tree.agents.values() if a.spec.name == "out")
            assert git(root, "branch", "--list", "dispatch/*").count("dispatch/") == 1  # the inner one is merged
            hub.tree.cancel(out_id)
            assert (await hub.wait_finished(top.id)).state == "done"
            assert hub.tree.merges[out_id].outcome == "discarded"
    assert not (root / "a" / "x.py").exists()  # merged into the outer worktree only, which was discarded
    assert user_state(root) == before
    assert_no_leftovers(root, data)


async def test_isolation_outside_a_git_repository_is_refused_naming_the_field(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    (root / "a").mkdir()
    model, said = ScriptedModel(), list[str]()

    def final(request: RecordedRequest) -> Reply:
        said.append(tool_messages(request.messages)[-1])
        return Reply(text="refused")

    summon = call("summon", task="[iso-1] work", scope=["a"], isolation="worktree")
    model.script("[top]", [Reply(tool_calls=[summon]), final])
    await run(root, data, model)
    [error] = said
    assert error.endswith(f"summon refused: isolation: worktree needs a git repository, and {root} is not in one")


@needs_bwrap
async def test_an_isolated_child_cannot_redirect_git_or_write_the_repositorys_config_or_hooks(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    repository(root)
    before = user_state(root)
    model, seen, results = ScriptedModel(), dict[str, Any](), list[str]()
    hostile = (
        "printf 'gitdir: /tmp/elsewhere\\n' > .git; "
        f"printf '[core]\\n\\thooksPath = /tmp/evil\\n' >> {root}/.git/config; "
        f"printf '#!/bin/sh\\ntouch /tmp/pwned\\n' > {root}/.git/hooks/post-checkout; "
        f"for d in {root}/.git/worktrees/*; do printf x > $d/config.worktree; printf /tmp > $d/commondir; done; "
        "echo 'legit = 1' > a/legit.py; true"
    )

    def report(request: RecordedRequest) -> Reply:
        results.extend(tool_messages(request.messages))
        return Reply(text="tried")

    def final(request: RecordedRequest) -> Reply:
        seen.update({c["name"]: c for c in last_tool_json(request.messages)["finished"]})
        return Reply(text="done")

    summon = call("summon", task="[iso-1] try", name="iso", scope=["."], grants={"shell": True}, isolation="worktree")
    model.script("[top]", [Reply(tool_calls=[summon]), Reply(tool_calls=[call("wait")]), final])
    model.script(
        "[iso-1]",
        [
            Reply(tool_calls=[call("write_file", path=".git", content="gitdir: /tmp/elsewhere\n")]),
            Reply(tool_calls=[call("run", command=hostile)]),
            report,
        ],
    )
    await run(root, data, model)

    assert "always denied" in results[0]
    assert user_state(root) == before
    assert "/tmp/pwned" not in (root / ".git" / "config").read_text()
    assert (root / "a" / "legit.py").read_text() == "legit = 1\n"  # its own work still came back
    assert seen["iso"]["merge"]["outcome"] == "merged" and seen["iso"]["merge"]["files"] == ["a/legit.py"]
    assert_no_leftovers(root, data)


async def test_a_denied_before_merge_checkpoint_discards_the_work(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    repository(root)
    templates = root / ".dispatch" / "templates"
    templates.mkdir(parents=True)
    (templates / "apart.yaml").write_text("isolation: worktree\ncheckpoints: [merge]\n")
    model, seen = ScriptedModel(), dict[str, Any]()

    def final(request: RecordedRequest) -> Reply:
        seen.update({c["name"]: c for c in last_tool_json(request.messages)["finished"]})
        return Reply(text="done")

    summon = call("summon", task="[iso-1] work", name="iso", template="apart", scope=["a"])
    model.script("[top]", [Reply(tool_calls=[summon]), Reply(tool_calls=[call("wait")]), final])
    model.script("[iso-1]", [Reply(tool_calls=[call("write_file", path="a/x.py", content="x = 1\n")]), Reply(text="x")])
    with model:
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            top = await hub.start("[top] one child", model=MODEL)
            approval = None
            for _ in range(500):
                pending = await hub.approvals()
                if pending:
                    approval = pending[0]
                    break
                await anyio.sleep(0.02)
            assert approval is not None and approval.checkpoint == "before_merge"
            assert "+x = 1" in (approval.diff or "")  # the whole diff, shown as one by the API and the UI
            assert approval.content == "merge 1 changed file of iso into its parent's files"
            await hub.answer_approval(approval.id, "deny", "once")
            done = await hub.wait_finished(top.id)
            assert done.state == "done"
    assert not (root / "a" / "x.py").exists()
    assert seen["iso"]["merge"]["outcome"] == "discarded" and "before_merge" in seen["iso"]["merge"]["reason"]
    assert_no_leftovers(root, data)


@pytest.mark.slow
async def test_a_sigkilled_hub_leaves_a_worktree_the_next_start_removes(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    root, data = dirs(tmp_path)
    repository(root)
    before = user_state(root)
    summon = call("summon", task="[iso-k] slow work", scope=["a"], isolation="worktree")
    scripted_llm.script("[kill-top]", [WireReply(tool_calls=[summon]), WireReply(tool_calls=[call("wait")])])
    scripted_llm.script("[iso-k]", [WireReply(text="never", delay_s=60)])
    hub = start_hub_process(root, data, "[kill-top] isolate one")
    hub.wait_for(lambda x: x.get("type") == "agent.spawned" and "[iso-k]" in x["data"]["task"])
    await until(lambda: len(scripted_llm.requests_for("[iso-k]")) == 1, timeout_s=30)
    assert "dispatch/" in git(root, "branch", "--list", "dispatch/*")
    assert git(root, "worktree", "list").count("\n") == 2
    hub.signal(signal.SIGKILL)
    assert hub.finish() == -signal.SIGKILL
    assert (data / "worktrees").is_dir() and list((data / "worktrees").iterdir())

    async with Hub.open(root, data):
        assert_no_leftovers(root, data)
    assert user_state(root) == before
    git(root, "fsck", "--no-dangling")  # the repository is sound
