"""What the web UI tests share: Debian's Chromium (found with ``shutil.which``; never
``playwright install``), a page opened from the URL ``dispatch serve`` prints that records every
console error, and project templates that put agents on the scripted model."""

from __future__ import annotations

import shutil
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.api_helpers import MODEL, ServedHub

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
LAPTOP = (1280, 900)
PHONE = (390, 844)


@contextmanager
def chromium() -> Generator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("needs chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def open_page(browser: Browser, served: ServedHub, size: tuple[int, int] = LAPTOP) -> tuple[Page, list[str]]:
    """The page at the printed URL, once its event stream is live; the list collects every console
    error and uncaught exception (a failed request is one: Chromium logs it)."""
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{served.base_url}/?token={served.token}")
    expect(page.get_by_role("status")).to_have_text("live")
    return page, errors


def write_template(project: Path, name: str, text: str) -> None:
    """A project template (``.dispatch/templates/NAME.yaml``)."""
    templates = project / ".dispatch" / "templates"
    templates.mkdir(parents=True, exist_ok=True)
    (templates / f"{name}.yaml").write_text(text)


def scripted_dispatch(project: Path) -> None:
    """The built-in dispatch template on the scripted model, so chats' agents answer from scripts."""
    builtin = Path(__file__).parent.parent / "configs" / "templates" / "dispatch.yaml"
    write_template(project, "dispatch", builtin.read_text() + f"\nmodel: {MODEL}\n")


def start_agent(served: ServedHub, task: str, template: str) -> str:
    """A top agent started through the API (as a script or another client would); its id."""
    started = httpx.post(
        served.base_url + "/api/agents",
        headers=served.auth,
        json={"task": task, "template": template, "model": MODEL},
        timeout=30,
    )
    assert started.status_code == 201, started.text
    return str(started.json()["id"])


def post_chat(served: ServedHub, text: str) -> str:
    """A new chat with its first message (its dispatch agent starts); the chat's id."""
    chat = httpx.post(served.base_url + "/api/chats", headers=served.auth, json={}, timeout=30)
    assert chat.status_code == 201, chat.text
    chat_id = str(chat.json()["id"])
    sent = httpx.post(
        f"{served.base_url}/api/chats/{chat_id}/messages", headers=served.auth, json={"text": text}, timeout=30
    )
    assert sent.status_code == 201, sent.text
    return chat_id
