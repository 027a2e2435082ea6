"""The web UI (``web/index.html``) in a real headless Chromium against ``dispatch serve`` with the
scripted model: the page opens from the printed URL, shows the agent tree live, sends a correction
with its delivery receipt, approves a checkpoint, talks in a chat (search, fork), answers a detached
agent, switches models, shows usage by day, key, model and agent, and logs no console error. More in
``test_web_ui_history.py`` (old chats, dates, resume) and ``test_web_ui_approvals.py``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.agent_helpers import call
from tests.api_helpers import MODEL, ServedHub, serving
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM, Step
from tests.web_ui_helpers import open_page, scripted_dispatch


def _open(browser: Browser, served: ServedHub, width: int, height: int) -> tuple[Page, list[str]]:
    return open_page(browser, served, (width, height))


def test_the_page_keeps_the_token_and_strips_it_from_the_address_bar(browser: Browser, served: ServedHub) -> None:
    page, errors = _open(browser, served, 390, 844)
    assert "token" not in page.url
    assert page.evaluate("sessionStorage.getItem('dispatch-token')") == served.token
    expect(page.get_by_role("button", name="Send to dispatch")).to_be_visible()
    page.close()
    assert errors == []


def test_tree_live_state_correction_receipt_and_checkpoint_approval(
    scripted_llm: ScriptedLLM, served: ServedHub, browser: Browser, tmp_path: Path
) -> None:
    working, release = threading.Event(), threading.Event()

    async def plans(_: RecordedRequest) -> Reply:
        working.set()
        await asyncio.to_thread(release.wait, 60)  # mid-step until the page has sent its correction
        return Reply(tool_calls=[call("list_dir", path=".")])

    scripted_llm.script("[ui-plan]", [plans, Reply(text="the plan: step one, step two")])
    page, errors = _open(browser, served, 1280, 900)
    try:
        started = httpx.post(
            served.base_url + "/api/agents",
            headers=served.auth,
            json={"task": "[ui-plan] plan the work", "template": "planner", "model": MODEL},
            timeout=30,
        )
        assert started.status_code == 201, started.text
        assert working.wait(60)

        agent = page.locator("#tree button.agent").first
        expect(agent).to_contain_text("running")
        expect(agent).to_contain_text("planner")
        agent.click()
        expect(page.locator("#agent-head")).to_contain_text("[ui-plan] plan the work")

        page.get_by_label("message to the agent").fill("ground the plan in the README")
        page.get_by_label("message kind").select_option("correction")
        page.get_by_role("button", name="Send message").click()
        expect(page.locator("#receipts li")).to_contain_text("waiting for delivery")
        release.set()
        expect(page.locator("#receipts li")).to_contain_text("delivered at step")
        expect(page.locator("#transcript")).to_contain_text("ground the plan in the README")

        approval = page.locator("#approvals .card")
        expect(approval).to_contain_text("the plan: step one, step two", timeout=30_000)
        page.screenshot(path=str(tmp_path / "web-ui-main.png"), full_page=True)
        approval.get_by_label("remember decision", exact=False).select_option("once")
        approval.get_by_role("button", name="Approve").click()
        expect(page.locator("#approvals")).to_contain_text("Nothing to approve.")
        expect(agent).to_contain_text("done", timeout=30_000)

        page.set_viewport_size({"width": 390, "height": 844})
        expect(page.get_by_role("button", name="Send message")).to_be_visible()
        page.screenshot(path=str(tmp_path / "web-ui-phone.png"), full_page=True)
    finally:
        release.set()
        page.close()
    assert errors == []


@pytest.fixture
def chat_hub(scripted_llm: ScriptedLLM, project: Path) -> Iterator[ServedHub]:
    """A hub whose chats' dispatch agents run on the scripted model (a project template naming it)."""
    scripted_dispatch(project)
    with serving(project, "--deadline", "5") as hub:
        yield hub


def test_chat_reply_search_and_fork(scripted_llm: ScriptedLLM, chat_hub: ServedHub, browser: Browser) -> None:
    scripted_llm.script("[ui-chat]", [Reply(text="the chat answer")])
    page, errors = _open(browser, chat_hub, 1280, 900)
    try:
        page.get_by_label("message to dispatch").fill("[ui-chat] what is in the project?")
        page.get_by_role("button", name="Send to dispatch").click()
        messages = page.get_by_label("chat messages")
        expect(messages).to_contain_text("the chat answer", timeout=30_000)
        expect(page.locator("#tree button.agent").first).to_contain_text("done", timeout=30_000)

        page.get_by_label("search chats").fill("nothing-like-this")
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#chat-list li")).to_have_count(0)
        page.get_by_label("search chats").fill("project")
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#chat-list li")).to_have_count(1)

        page.get_by_label("search chats").fill("")
        messages.get_by_role("button", name="fork chat from this message").first.click()
        expect(page.locator("#chat-list li")).to_have_count(2)
        expect(page.locator("#chat-list")).to_contain_text("fork")
    finally:
        page.close()
    assert errors == []


def test_detached_question_answered_and_model_switched(
    scripted_llm: ScriptedLLM, served: ServedHub, browser: Browser
) -> None:
    ask = call("ask_user", question="Which module comes first?")
    scripted_llm.script("[ui-ask]", [Reply(tool_calls=[ask]), Reply(text="plan: the parser first")])
    page, errors = _open(browser, served, 1280, 900)
    try:
        started = httpx.post(
            served.base_url + "/api/agents",
            headers=served.auth,
            json={"task": "[ui-ask] plan the parser", "template": "planner", "model": MODEL},
            timeout=30,
        )
        assert started.status_code == 201, started.text
        agent = page.locator("#tree button.agent").first
        expect(agent).to_contain_text("waiting for you", timeout=30_000)
        agent.click()
        page.get_by_label("model", exact=True).fill("openai/scripted-b")
        page.get_by_role("button", name="Switch model").click()
        expect(page.locator("#agent-head")).to_contain_text("openai/scripted-b")

        threads = page.locator("#threads")
        expect(threads).to_contain_text("Which module comes first?")
        threads.get_by_role("textbox").fill("the parser")
        threads.get_by_role("button", name="Answer").click()
        approval = page.locator("#approvals .card")
        expect(approval).to_contain_text("plan: the parser first", timeout=30_000)
        approval.get_by_role("button", name="Approve").click()
        expect(agent).to_contain_text("done", timeout=30_000)
    finally:
        page.close()
    assert errors == []
    assert scripted_llm.requests_for("[ui-ask]")[-1].model == "scripted-b"


def test_a_chat_grows_a_tree_of_three_and_a_child_gets_a_message(
    scripted_llm: ScriptedLLM, chat_hub: ServedHub, browser: Browser, tmp_path: Path
) -> None:
    working, release = threading.Event(), threading.Event()

    async def works(_: RecordedRequest) -> Reply:
        working.set()
        await asyncio.to_thread(release.wait, 60)
        return Reply(tool_calls=[call("list_dir", path=".")])

    kids = [
        call("summon", task="[ui-kid-a] part a", name="kid-a", wait=False),
        call("summon", task="[ui-kid-b] part b", name="kid-b", wait=True),
    ]
    # kid-a runs on after the dispatch agent's answer: it then waits for its child, then reports.
    top_steps: list[Step] = [Reply(tool_calls=kids), Reply(text="kid-a still works"), Reply(text="both parts done")]
    scripted_llm.script("[ui-tree]", top_steps)
    scripted_llm.script("[ui-kid-a]", [works, Reply(text="part a done")])
    scripted_llm.script("[ui-kid-b]", [Reply(text="part b done")])
    page, errors = _open(browser, chat_hub, 1280, 900)
    try:
        page.get_by_label("message to dispatch").fill("[ui-tree] split the work")
        page.get_by_role("button", name="Send to dispatch").click()
        assert working.wait(60)
        agents = page.locator("#tree button.agent")
        expect(agents).to_have_count(3)
        kid = page.get_by_role("button", name="agent kid-a", exact=False)
        expect(kid).to_contain_text("running")
        expect(agents.first).to_contain_text("waiting_children", timeout=30_000)
        expect(agents.first).to_contain_text("child")
        kid.click()
        page.get_by_label("model", exact=True).fill("openai/scripted-b")
        page.get_by_role("button", name="Switch model").click()
        expect(page.locator("#agent-head")).to_contain_text("openai/scripted-b")
        expect(kid).to_contain_text("openai/scripted-b")
        page.get_by_label("message to the agent").fill("use tabs")
        page.get_by_label("message kind").select_option("instruction")
        page.get_by_role("button", name="Send message").click()
        expect(page.locator("#receipts li")).to_contain_text("waiting for delivery")
        release.set()
        expect(page.locator("#receipts li")).to_contain_text("delivered at step")
        expect(page.locator("#transcript")).to_contain_text("use tabs")
        expect(page.get_by_label("chat messages")).to_contain_text("both parts done", timeout=30_000)
        expect(kid).to_contain_text("done")
        expect(agents.first).to_contain_text("done")
        expect(page.get_by_label("message to the agent")).to_be_disabled()  # kid-a is done: reads no more
        _shows_usage(page, chat_hub)
        page.screenshot(path=str(tmp_path / "web-ui-tree.png"), full_page=True)  # the run's artifact
    finally:
        release.set()
        page.close()
    assert errors == []
    assert scripted_llm.requests_for("[ui-kid-a]")[-1].model == "scripted-b"


def _shows_usage(page: Page, served: ServedHub) -> None:
    """The usage panel lists every day, key, model and agent the hub's ledger has, each with a bar."""
    usage = httpx.get(served.base_url + "/api/usage", headers=served.auth, timeout=30).json()
    names = {a["id"]: a["name"] for a in httpx.get(served.base_url + "/api/agents", headers=served.auth).json()}
    assert {"openai/scripted", "openai/scripted-b"} <= set(usage["by_model"]), usage["by_model"]
    for title, table in [("day", "by_day"), ("key", "by_key"), ("model", "by_model"), ("agent", "by_agent")]:
        rows = page.get_by_label(f"usage by {title}").get_by_role("listitem")
        expect(rows).to_have_count(len(usage[table]))
        for key, figures in usage[table].items():
            label = names[key] if table == "by_agent" else key
            tokens = int(figures["tokens_in"] + figures["tokens_out"])
            expect(rows.filter(has_text=f"{label}: ")).to_contain_text(f"{tokens} tokens")
    expect(page.locator("#usage .bar").first).to_be_visible()


def test_the_page_says_which_model_a_new_chat_uses_and_follows_a_config_edit(
    browser: Browser, served: ServedHub, project: Path
) -> None:
    page, errors = _open(browser, served, 1280, 900)
    note = page.get_by_role("note", name="model of the chat")
    expect(note).to_have_text("New chats use anthropic/claude-sonnet-4-6 (ANTHROPIC_API_KEY is set).")

    (project / ".dispatch").mkdir(exist_ok=True)
    (project / ".dispatch" / "config.yaml").write_text("models: {default: openai/gpt-5.2}\n")
    expect(note).to_have_text("New chats use openai/gpt-5.2 (models.default in the config).", timeout=20_000)

    (project / ".dispatch" / "config.yaml").write_text("models: {default: ''}\n")
    problem = page.get_by_role("alert", name="config problem")
    expect(problem).to_contain_text("The config was not reloaded: ", timeout=20_000)
    expect(problem).to_contain_text("models.default")
    expect(note).to_have_text("New chats use openai/gpt-5.2 (models.default in the config).")
    page.close()
    assert errors == []


def test_a_new_chat_in_another_project_works_there_and_the_lists_filter_by_project(
    scripted_llm: ScriptedLLM, chat_hub: ServedHub, browser: Browser, project: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    scripted_dispatch(other)
    scripted_llm.script("[here]", [Reply(text="answered here")])
    scripted_llm.script(
        "[there]", [Reply(tool_calls=[call("write_file", path="there.txt", content="x")]), Reply(text="wrote there")]
    )
    page, errors = _open(browser, chat_hub, 1280, 900)
    try:
        page.get_by_label("message to dispatch").fill("[here] hello")
        page.get_by_role("button", name="Send to dispatch").click()
        expect(page.get_by_label("chat messages")).to_contain_text("answered here", timeout=30_000)
        expect(page.get_by_label("project of new chats")).to_have_value(str(project.resolve()))

        page.get_by_label("project of new chats").fill(str(other))
        page.get_by_role("button", name="New chat").click()
        page.get_by_label("message to dispatch").fill("[there] write a file")
        page.get_by_role("button", name="Send to dispatch").click()
        expect(page.get_by_label("chat messages")).to_contain_text("wrote there", timeout=30_000)
        expect(page.locator("#chat-list li")).to_have_count(2)

        page.get_by_label("agents shown").select_option("all")
        page.get_by_label("project shown").select_option(str(other.resolve()))
        expect(page.locator("#chat-list li")).to_have_count(1)
        expect(page.locator("#tree button.agent")).to_have_count(1)
        expect(page.locator("#tree")).to_contain_text("done")
        page.get_by_label("project shown").select_option(str(project.resolve()))
        expect(page.locator("#chat-list li")).to_have_count(1)
        expect(page.locator("#tree button.agent")).to_have_count(1)
    finally:
        page.close()
    assert (other / "there.txt").read_text() == "x" and not (project / "there.txt").exists()
    assert errors == []


def test_a_new_chat_with_caps_gives_them_to_its_dispatch_agent(
    scripted_llm: ScriptedLLM, chat_hub: ServedHub, browser: Browser
) -> None:
    scripted_llm.script("[ui-loop]", [Reply(tool_calls=[call("list_dir", path=".")])])
    page, errors = _open(browser, chat_hub, 1280, 900)
    try:
        page.get_by_label("budget of new chats").fill("5")
        page.get_by_label("max steps of new chats").fill("1")
        page.get_by_role("button", name="New chat").click()
        page.get_by_label("message to dispatch").fill("[ui-loop] list forever")
        page.get_by_role("button", name="Send to dispatch").click()
        expect(page.get_by_label("chat messages")).to_contain_text(
            "(the dispatch agent failed: stopped after 1 steps without a report (its own max_steps is 1;",
            timeout=30_000,
        )
        expect(page.locator("#tree button.agent").first).to_contain_text("caps $5, 1 steps", timeout=30_000)
    finally:
        page.close()
    assert errors == []
