"""Changes you can see, review and undo, in the web UI of a served hub: a ``before_write`` approval
shows the proposed edit as a coloured diff and is approved from it; an agent's changed files (its
own, and with its descendants') and their diff, refreshed as they change; the Rewind button
restores the files on disk, its Undo puts them back, and a rewind refused because the user
edited a file since names that file and offers to force it. A file's content is shown as text,
never run as HTML."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.agent_helpers import call
from tests.api_helpers import ServedHub, serving
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM
from tests.web_ui_helpers import open_page, start_agent, write_template

HOSTILE = '<script>window.__ran = "script"</script><img src=x onerror="window.__ran = \'img\'">'
"""A line of a file that would run, were it put in the page as HTML."""
WAIT_MS = 30_000
"""How long an agent's steps may take on a loaded machine."""


@pytest.fixture
def hub(scripted_llm: ScriptedLLM, project: Path) -> Iterator[ServedHub]:
    """A project with ``notes.md`` and two templates: ``careful`` (fs, asks before each write) and
    ``writer`` (fs and summon, asks nothing)."""
    (project / "notes.md").write_text("# Notes\nold line\nkept\n")
    write_template(project, "careful", "description: asks first\ntools:\n  fs: true\ncheckpoints: [edit]\n")
    write_template(project, "writer", "description: writes\ntools:\n  fs: true\n  summon: true\n")
    with serving(project, "--deadline", "5") as served:
        yield served


def _agent(page: Page, agent_id: str) -> Locator:
    return page.locator(f'#tree button.agent[data-agent-id="{agent_id}"]')


def _not_run(page: Page) -> None:
    assert page.evaluate("window.__ran") is None, "a file's content ran as HTML"


def _approve_a_proposed_edit_from_its_diff(
    page: Page, hub: ServedHub, scripted_llm: ScriptedLLM, project: Path
) -> None:
    edit = call("edit_file", path="notes.md", old="old line", new=f"new line {HOSTILE}")
    scripted_llm.script("[ui-edit]", [Reply(tool_calls=[edit]), Reply(text="edited")])
    agent = _agent(page, start_agent(hub, "[ui-edit] edit the notes", "careful"))
    card = page.locator("#approvals .card").filter(has_text="edit_file notes.md")
    expect(card).to_contain_text("checkpoint before_write", timeout=WAIT_MS)
    diff = card.get_by_label("diff")
    expect(diff.locator(".removed")).to_have_text(["-old line"])
    expect(diff.locator(".added")).to_have_text([f"+new line {HOSTILE}"])  # the markup, as text
    expect(diff.locator(".hunk")).to_have_text(["@@ -1,3 +1,3 @@"])
    assert diff.locator("img, script").count() == 0
    assert (project / "notes.md").read_text() == "# Notes\nold line\nkept\n", "nothing written before the answer"
    _not_run(page)

    card.get_by_role("button", name="Approve").click()
    expect(agent).to_contain_text("done", timeout=WAIT_MS)
    expect(page.locator("#approvals")).to_contain_text("Nothing to approve.")
    assert (project / "notes.md").read_text() == f"# Notes\nnew line {HOSTILE}\nkept\n"


def _see_an_agents_changes(page: Page, hub: ServedHub, scripted_llm: ScriptedLLM) -> str:
    """A top agent, shown while it works, writes ``made.txt`` and summons a child that edits
    ``notes.md``: the list follows as they write. Returns the top agent's id."""
    release = threading.Event()

    async def write_when_released(_: RecordedRequest) -> Reply:
        await asyncio.to_thread(release.wait, 60)
        return Reply(tool_calls=[call("write_file", path="made.txt", content=f"made\n{HOSTILE}\n")])

    scripted_llm.script(
        "[ui-top]",
        [
            write_when_released,
            Reply(tool_calls=[call("summon", task="[ui-child] edit the notes", scope=["notes.md"], wait=False)]),
            Reply(tool_calls=[call("wait")]),
            Reply(text="top done"),
        ],
    )
    edit = call("edit_file", path="notes.md", old="kept", new="kept, and more")
    scripted_llm.script("[ui-child]", [Reply(tool_calls=[edit]), Reply(text="child done")])
    top = start_agent(hub, "[ui-top] make and edit", "writer")
    try:
        _agent(page, top).click()
        expect(page.locator("#changes")).to_contain_text("No changed files.")
    finally:
        release.set()
    expect(_agent(page, top)).to_contain_text("done", timeout=WAIT_MS)

    files = page.get_by_label("changed files")
    made = files.get_by_label("made.txt: added, 2 added, 0 removed")
    notes = files.get_by_label("notes.md: modified, 1 added, 1 removed")
    expect(made).to_be_visible()
    expect(notes).to_be_visible()  # the child's, counted in its parent's
    expect(made.locator(".added")).to_have_text(["+made", f"+{HOSTILE}"])
    expect(notes.locator(".removed")).to_have_text(["-kept"])
    expect(notes.locator(".added")).to_have_text(["+kept, and more"])
    notes.locator("summary").click()  # folded: its diff hidden, the file still listed
    expect(notes.locator(".diff")).to_be_hidden()
    assert page.locator("#changes img, #changes script").count() == 0
    _not_run(page)

    page.get_by_label("changes shown").select_option("own")
    expect(files.get_by_label("made.txt", exact=False)).to_be_visible()
    expect(files.get_by_label("notes.md", exact=False)).to_have_count(0)
    page.get_by_label("changes shown").select_option("all")
    expect(files.get_by_label("notes.md", exact=False)).to_be_visible()
    return top


def _rewind_undo_and_a_refused_rewind(page: Page, project: Path) -> None:
    made, notes = project / "made.txt", project / "notes.md"
    agents_notes = notes.read_text()
    box = page.get_by_role("group", name="rewind")
    page.get_by_role("button", name="Rewind").click()
    expect(box).to_contain_text("Put back every file")
    box.get_by_role("button", name="Confirm rewind").click()
    expect(box).to_contain_text("Rewound: put back 2 files: made.txt, notes.md")
    assert not made.exists() and notes.read_text() == f"# Notes\nnew line {HOSTILE}\nkept\n"
    expect(page.locator("#changes")).to_contain_text("No changed files.")

    box.get_by_role("button", name="Undo rewind").click()
    expect(box).to_contain_text("Undid rewind rw-")
    assert made.read_text() == f"made\n{HOSTILE}\n" and notes.read_text() == agents_notes
    expect(page.get_by_label("changed files").get_by_label("made.txt", exact=False)).to_be_visible()

    notes.write_text("# Notes\nthe user's own edit\n")  # the user edits a file since
    page.get_by_role("button", name="Rewind").click()
    box.get_by_role("button", name="Confirm rewind").click()
    refusal = box.get_by_role("alert")
    expect(refusal).to_contain_text("not rewound: notes.md changed since agent")
    assert made.exists() and notes.read_text() == "# Notes\nthe user's own edit\n", "a refused rewind writes nothing"
    box.get_by_role("button", name="Rewind anyway (overwrite them)").click()
    expect(box).to_contain_text("Rewound: put back 2 files")
    assert not made.exists() and notes.read_text() == f"# Notes\nnew line {HOSTILE}\nkept\n"


def test_review_an_edit_see_the_changes_and_rewind_them(
    scripted_llm: ScriptedLLM, hub: ServedHub, browser: Browser, project: Path
) -> None:
    page, errors = open_page(browser, hub)
    try:
        _approve_a_proposed_edit_from_its_diff(page, hub, scripted_llm, project)
        _see_an_agents_changes(page, hub, scripted_llm)
        _rewind_undo_and_a_refused_rewind(page, project)
        _not_run(page)
    finally:
        page.close()
    assert errors == ["Failed to load resource: the server responded with a status of 409 (Conflict)"]  # the refusal
