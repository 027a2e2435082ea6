"""The web UI over a hub's history: chats of an earlier hub run, found by date and by content,
each opened with its messages and its own agent tree (stored agents, not live ones), and a chat
agent interrupted by the earlier hub's stop resumed from the page."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, expect

from tests.agent_helpers import call
from tests.api_helpers import ServedHub, start_hub
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM
from tests.web_ui_helpers import PHONE, open_page, post_chat, scripted_dispatch


def _chat(served: ServedHub, chat_id: str) -> dict[str, Any]:
    response = httpx.get(f"{served.base_url}/api/chats/{chat_id}", headers=served.auth, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _until_answered(served: ServedHub, chat_id: str, text: str) -> None:
    deadline = time.monotonic() + 60
    while not any(m["text"] == text for m in _chat(served, chat_id)["messages"]):
        assert time.monotonic() < deadline, f"chat {chat_id} got no answer {text!r}"
        time.sleep(0.05)


def _until_stopping(served: ServedHub) -> None:
    """Wait until the hub refuses new work, or has stopped (a model call in flight is not waited for)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            refused = httpx.post(served.base_url + "/api/agents/none/resume", headers=served.auth)
        except httpx.ConnectError:
            return
        if "stopping" in refused.text:
            return
        assert time.monotonic() < deadline, "the hub did not begin to stop"
        time.sleep(0.02)


def _earlier_run(scripted_llm: ScriptedLLM, project: Path) -> None:
    """A first hub run: chat A answers with the help of a child; chat B's agent is mid-step when the
    hub is told to stop, so it is left interrupted after that step."""
    working, release = threading.Event(), threading.Event()

    async def long_step(_: RecordedRequest) -> Reply:
        working.set()
        await asyncio.to_thread(release.wait, 60)
        return Reply(tool_calls=[call("list_dir", path=".")])

    summon = call("summon", task="[hist-kid] count the files", name="counter", wait=True)
    scripted_llm.script("[hist-a]", [Reply(tool_calls=[summon]), Reply(text="chat a: two files")])
    scripted_llm.script("[hist-kid]", [Reply(text="two files")])
    scripted_llm.script("[hist-b]", [long_step, Reply(text="chat b: finished after the restart")])
    first = start_hub(project, "--deadline", "10")
    try:
        chat_a = post_chat(first, "[hist-a] how many files?")
        _until_answered(first, chat_a, "chat a: two files")
        post_chat(first, "[hist-b] a long job")
        assert working.wait(60)
        first.signal(signal.SIGTERM)
        _until_stopping(first)
        release.set()  # the running step finishes within the deadline; then the agent stops
        assert first.wait() == 0, first.stderr()
    finally:
        release.set()
        first.stop()


def _search(page: Page, q: str = "", since: str = "", until: str = "") -> None:
    page.get_by_label("search chats").fill(q)
    page.get_by_label("chats updated from").fill(since)
    page.get_by_label("chats updated until").fill(until)
    page.get_by_role("button", name="Search", exact=True).click()


def test_old_chats_by_date_and_content_each_with_its_stored_tree_and_a_resume(
    scripted_llm: ScriptedLLM, project: Path, browser: Browser, tmp_path: Path
) -> None:
    scripted_dispatch(project)
    _earlier_run(scripted_llm, project)
    hub = start_hub(project, "--deadline", "5")  # the same project and data directory
    page, errors = open_page(browser, hub)
    try:
        chats = page.get_by_role("list", name="chats").get_by_role("listitem")
        expect(chats).to_have_count(2)
        today = date.today()
        _search(page, since=(today + timedelta(days=1)).isoformat())
        expect(chats).to_have_count(0)
        _search(page, since=today.isoformat(), until=today.isoformat())
        expect(chats).to_have_count(2)
        _search(page, until=(today - timedelta(days=1)).isoformat())
        expect(chats).to_have_count(0)
        _search(page, q="two files", since=today.isoformat())  # in chat A's answer, not in its title
        expect(chats).to_have_count(1)
        expect(chats).to_contain_text("[hist-a] how many files?")
        _search(page)
        expect(chats).to_have_count(2)

        tree = page.locator("#tree button.agent")
        expect(tree).to_have_count(3)  # every agent, of both chats, before a chat is opened
        page.get_by_role("button", name="open chat [hist-a]").click()
        expect(page.get_by_label("chat messages")).to_contain_text("chat a: two files")
        expect(page.get_by_label("agents shown")).to_have_value("chat")
        expect(tree).to_have_count(2)
        expect(page.get_by_role("button", name="agent counter, done")).to_be_visible()
        expect(tree.first).to_contain_text("done")

        page.get_by_role("button", name="open chat [hist-b]").click()
        expect(page.get_by_label("chat messages")).to_contain_text("[hist-b] a long job")
        expect(tree).to_have_count(1)
        expect(tree).to_contain_text("interrupted")
        tree.click()
        expect(page.get_by_role("button", name="Resume agent")).to_be_enabled()
        page.screenshot(path=str(tmp_path / "web-ui-history.png"), full_page=True)
        page.get_by_role("button", name="Resume agent").click()
        expect(tree).to_contain_text("done", timeout=30_000)
        expect(page.get_by_label("chat messages")).to_contain_text("chat b: finished after the restart")
        expect(page.get_by_role("button", name="Resume agent")).to_be_disabled()

        page.get_by_label("agents shown").select_option("all")
        expect(tree).to_have_count(3)
        page.set_viewport_size({"width": PHONE[0], "height": PHONE[1]})
        expect(page.get_by_role("button", name="open chat [hist-b]")).to_be_visible()
        page.screenshot(path=str(tmp_path / "web-ui-history-phone.png"), full_page=True)
    finally:
        page.close()
        code = hub.stop()
    assert code == 0, hub.stderr()
    assert errors == []
