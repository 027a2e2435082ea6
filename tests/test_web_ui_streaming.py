"""The web UI end to end, in a real Chromium: a task typed into the chat is answered by a model
whose answer really streams (the shipped scripted model, a word every few tenths of a second),
and the page shows the text, rendered, before the model call ends; an image a tool returned
shows in the agent's transcript (an outside MCP server's screenshot), and only as an inline
image."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from dispatch.hub.api.app import create_app
from dispatch.hub.llm.scripted import Reply, ScriptedModel
from tests.agent_helpers import call
from tests.api_helpers import hub_in_a_thread, served_in_process
from tests.test_tool_images import project_with_shots
from tests.web_ui_helpers import open_url

TOKEN = "web-ui-streaming-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ANSWER = "## The plan\n\nFirst **read** the code, then write `plan.md` and stop. LASTWORD"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, ScriptedModel]]:
    project_with_shots(tmp_path)
    model = ScriptedModel()
    with (
        hub_in_a_thread(tmp_path, model) as (portal, hub),
        served_in_process(portal, create_app(hub, token=TOKEN)) as url,
    ):
        yield url, model


def _agents(url: str) -> list[dict[str, object]]:
    return list(httpx.get(url + "/api/agents", headers=AUTH, timeout=30).json())


def test_a_streamed_answer_shows_in_the_chat_before_its_model_call_ends(
    served: tuple[str, ScriptedModel], browser: Browser
) -> None:
    url, model = served
    model.script("[plan]", [Reply(text=ANSWER, chunk_delay_s=0.4)])
    page, errors = open_url(browser, url, TOKEN)
    try:
        box = page.get_by_label("message to dispatch")
        box.fill("[plan] plan the work")
        box.press("Enter")
        streamed = page.get_by_label("work in progress").get_by_label("streamed text")
        expect(streamed.locator("strong")).to_have_text("read", timeout=20_000)
        expect(streamed.locator("h2")).to_have_text("The plan")
        (request,) = model.requests_for("[plan]")
        assert request.finished_at is None, "the text showed while the model call was still going"
        assert "LASTWORD" not in (streamed.text_content() or "")

        expect(page.get_by_label("chat messages")).to_contain_text("LASTWORD", timeout=20_000)
        expect(streamed).to_have_count(0)  # the finished answer took the streamed text's place
    finally:
        page.close()
    assert errors == []


def test_an_image_a_tool_returned_shows_in_the_transcript(served: tuple[str, ScriptedModel], browser: Browser) -> None:
    url, model = served
    model.script("[look]", [Reply(tool_calls=[call("screenshot")]), Reply(text="seen")])
    started = httpx.post(
        url + "/api/agents",
        headers=AUTH,
        json={"task": "[look] what does the page show?", "template": "looker"},
        timeout=30,
    )
    assert started.status_code == 201, started.text
    agent_id = started.json()["id"]
    deadline = time.monotonic() + 60
    while next(a for a in _agents(url) if a["id"] == agent_id)["state"] != "done":
        assert time.monotonic() < deadline, "the looker did not finish"
        time.sleep(0.1)
    page, errors = open_url(browser, url, TOKEN)
    try:
        page.locator("#tree button.agent", has_text="looker").first.click()
        image = page.locator("#transcript img.tool-image")
        expect(image).to_have_count(1)
        assert str(image.get_attribute("src")).startswith("data:image/png;base64,")
        assert image.evaluate("img => img.complete && img.naturalWidth") == 2  # the 2x2 screenshot, decoded
        assert "base64" not in (page.locator("#transcript").text_content() or ""), "no base64 shown as text"
    finally:
        page.close()
    assert errors == []
