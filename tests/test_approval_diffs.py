"""Reviewing a write with a real diff: the ``before_write`` checkpoint holds an fs write with the
unified diff of what it would do to the file as it is (an edit's lines removed and added; a new
file all added), in the approval's ``diff`` (the view, the API, the ``approval.requested``
event), bounded, and saying in one line why when no diff can be shown. The terminal's coloured
diff: tests/test_cli_run_hub.py; the web UI's: tests/test_web_ui_changes.py."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from dispatch.hub.api.app import create_app
from dispatch.hub.api.auth import load_or_create_token
from dispatch.hub.changes.proposed import MAX_DIFFED_BYTES, SHOWN_CHARS, proposed_diff
from dispatch.hub.events import ApprovalRequested
from dispatch.hub.llm.scripted import Reply, ScriptedModel
from tests.agent_helpers import assert_done, call, top_spec
from tests.api_helpers import hub_in_a_thread, served_in_process
from tests.chat_helpers import pending, running_hub
from tests.fakes.scripted_llm import Reply as HttpReply
from tests.fakes.scripted_llm import ScriptedLLM

T = TypeVar("T")
NEW_APP = "one = 1\ntwo = 'two'\nthree = 3\n"
EDITED = "diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -1,3 +1,3 @@\n one = 1\n-two = 2\n+two = 'two'\n three = 3\n"  # noqa: E501


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "app.py").write_text("one = 1\ntwo = 2\nthree = 3\n")
    return project


def test_an_edit_and_a_rewrite_are_diffed_against_the_file(root: Path) -> None:
    edit = {"path": "app.py", "old": "two = 2", "new": "two = 'two'"}
    assert proposed_diff(root, "edit_file", edit) == EDITED
    whole = {"path": "app.py", "content": NEW_APP}
    assert proposed_diff(root, "write_file", whole) == EDITED
    assert proposed_diff(root, "edit_file", {**edit, "path": str(root / "app.py")}) == EDITED  # absolute, inside
    assert proposed_diff(root, "write_file", {"path": "pkg/new.py", "content": "a\nb\n"}) == (
        "diff --git a/pkg/new.py b/pkg/new.py\n--- /dev/null\n+++ b/pkg/new.py\n@@ -0,0 +1,2 @@\n+a\n+b\n"
    )
    assert proposed_diff(root, "write_file", {"path": "app.py", "content": "one = 1\ntwo = 2\nthree = 3"}).endswith(
        "-three = 3\n+three = 3\n\\ No newline at end of file\n"
    )


def test_what_cannot_be_diffed_is_said_in_one_line(root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("outside\n")
    os.symlink(tmp_path / "secret", root / "link")
    (root / "blob.bin").write_bytes(b"\x00\x01\x02")
    (root / "huge.txt").write_text("x" * (MAX_DIFFED_BYTES + 1))

    def said(name: str, **arguments: str) -> str:
        return proposed_diff(root, name, arguments)

    assert said("edit_file", path="app.py", old="four", new="4") == (
        "# no diff: the text to replace is not found in the file, so the edit will fail"
    )
    assert (
        said("edit_file", path="gone.py", old="a", new="b")
        == "# no diff: gone.py does not exist, so the edit will fail"
    )
    assert said("write_file", path="link", content="x") == "# no diff: link leads outside the project"
    assert said("write_file", path="blob.bin", content="x") == "# no diff: blob.bin is a binary file"
    assert said("write_file", path="huge.txt", content="x") == (
        f"# no diff: huge.txt is {MAX_DIFFED_BYTES + 1} bytes, too large to diff here"
    )
    assert (
        said("write_file", path="../up.txt", content="x") == "# no diff: '../up.txt' is not a file path in the project"
    )
    assert said("write_file", path="app.py", content="one = 1\ntwo = 2\nthree = 3\n") == (
        "# no change: the write leaves app.py as it is"
    )


def test_a_long_diff_is_cut_at_a_line_with_a_note(root: Path) -> None:
    content = "".join(f"line {i}\n" for i in range(5000))
    shown = proposed_diff(root, "write_file", {"path": "long.txt", "content": content})
    kept, note = shown.rstrip("\n").rsplit("\n", 1)
    assert len(shown) <= SHOWN_CHARS + 100 and kept.endswith(tuple(f"+line {i}" for i in range(5000)))
    left = 5000 - kept.count("\n+line ")
    assert note.startswith(f"# ... {left} more lines of the diff not shown (")


@pytest.mark.anyio
async def test_before_write_holds_an_edit_with_its_diff_in_the_view_and_the_event(
    scripted_llm: ScriptedLLM, root: Path, tmp_path: Path
) -> None:
    edit = call("edit_file", path="app.py", old="two = 2", new="two = 'two'")
    scripted_llm.script("[editor]", [HttpReply(tool_calls=[edit]), HttpReply(text="edited")])
    async with running_hub(root, tmp_path / "dispatch.db") as parts:
        top = parts.tree.start(top_spec("[editor] edit", checkpoints={"edit": "ask"}))
        [asked] = await pending(parts)
        unchanged = (root / "app.py").read_text()
        await parts.approvals.answer_approval(asked.id, "approve", "once")
        await top.finished.wait()

    assert_done(top)
    assert (asked.checkpoint, asked.content, asked.diff) == ("before_write", "edit_file app.py", EDITED)
    [event] = [e.data for e in parts.events if isinstance(e.data, ApprovalRequested)]
    assert event.diff == EDITED and event.content == "edit_file app.py"
    assert unchanged == "one = 1\ntwo = 2\nthree = 3\n"
    assert (root / "app.py").read_text() == "one = 1\ntwo = 'two'\nthree = 3\n"


def test_the_approvals_api_shows_the_diff_of_a_proposed_write(tmp_path: Path) -> None:
    root = tmp_path / "project"
    templates = root / ".dispatch" / "templates"
    templates.mkdir(parents=True)
    (templates / "careful.yaml").write_text("tools:\n  fs: true\ncheckpoints: [edit]\n")
    (root / "app.py").write_text("one = 1\ntwo = 2\nthree = 3\n")
    model = ScriptedModel()
    model.script(
        "[api]", [Reply(tool_calls=[call("write_file", path="app.py", content=NEW_APP)]), Reply(text="written")]
    )
    with model, hub_in_a_thread(tmp_path, model) as (portal, hub):
        token = load_or_create_token(tmp_path / "data")
        with (
            served_in_process(portal, create_app(hub, token=token)) as url,
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client,
        ):
            started = client.post("/api/agents", json={"task": "[api] write", "template": "careful"})
            assert started.status_code == 201, started.text
            [approval] = _until(lambda: client.get("/api/approvals").json())
            assert (approval["checkpoint"], approval["content"], approval["diff"]) == (
                "before_write", "write_file app.py (30 characters)", EDITED
            )  # fmt: skip
            answered = client.post(f"/api/approvals/{approval['id']}", json={"decision": "approve"})
            assert answered.json()["diff"] == EDITED
            _until(lambda: client.get(f"/api/agents/{started.json()['id']}").json()["state"] == "done")
    assert (root / "app.py").read_text() == "one = 1\ntwo = 'two'\nthree = 3\n"


def _until(found: Callable[[], T]) -> T:
    deadline = time.monotonic() + 30
    while not (value := found()):
        assert time.monotonic() < deadline, "the hub did not get there in time"
        time.sleep(0.02)
    return value
