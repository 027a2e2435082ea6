"""The web UI shows where an agent compacted: asked to through the REST API while it works, the
agent's view counts the compaction and its transcript, kept whole, carries a marker at the place."""

from __future__ import annotations

import httpx
from playwright.sync_api import Browser, expect

from tests.agent_helpers import call
from tests.api_helpers import MODEL, ServedHub
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.web_ui_helpers import open_page


def test_the_agent_view_marks_where_it_compacted(
    scripted_llm: ScriptedLLM, served: ServedHub, browser: Browser
) -> None:
    scripted_llm.script(
        "[ui-compact]",
        [
            Reply(text="first look", tool_calls=[call("list_dir", path=".")]),
            Reply(text="second look", tool_calls=[call("list_dir", path=".")], delay_s=2),
            Reply(text="You listed the project root twice; it is empty."),  # the summary
            Reply(text="the root is empty"),
        ],
    )
    page, errors = open_page(browser, served, (1280, 900))
    try:
        started = httpx.post(
            served.base_url + "/api/agents",
            headers=served.auth,
            json={"task": "[ui-compact] look around", "model": MODEL},
            timeout=30,
        )
        agent_id = started.json()["id"]
        expect(page.locator("#tree button.agent").first).to_contain_text("running", timeout=30_000)
        while len(scripted_llm.requests_for("[ui-compact]")) < 2:
            page.wait_for_timeout(50)
        asked = httpx.post(f"{served.base_url}/api/agents/{agent_id}/compact", headers=served.auth, timeout=30)
        assert asked.status_code == 202, asked.text
        agent = page.locator("#tree button.agent").first
        expect(agent).to_contain_text("done", timeout=30_000)
        agent.click()
        expect(page.locator("#agent-head")).to_contain_text("compacted 1×")
        marker = page.locator("#transcript .compacted")
        expect(marker).to_have_count(1)
        expect(page.locator("#transcript")).to_contain_text("first look")  # the whole transcript is shown
        after = page.locator("#transcript .compacted + .msg")
        expect(after).to_contain_text("second look")
        again = httpx.post(f"{served.base_url}/api/agents/{agent_id}/compact", headers=served.auth, timeout=30)
        assert again.status_code == 400 and "has finished (done)" in again.text
    finally:
        page.close()
    assert errors == []
