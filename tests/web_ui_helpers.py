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
from anyio.from_thread import BlockingPortal
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from dispatch.hub.events import EventBus, OtherEvent
from dispatch.hub.service.hub import Hub
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
    return open_url(browser, served.base_url, served.token, size)


WATCH_PAGE = """
window.__longTasks = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTasks.push(entry.duration);
}).observe({ type: "longtask", buffered: true });
window.__treeAt = {};
(function watchTree() {
  const rows = document.querySelectorAll("#tree button.agent").length;
  for (const want of [1, WANT]) {
    if (rows >= want && !(want in window.__treeAt)) window.__treeAt[want] = performance.now();
  }
  setTimeout(watchTree, 20);
})();
"""
"""Run in the page before its own script: every long task's duration (the Long Tasks API: the main
thread busy for over 50 ms) in ``window.__longTasks``, and when the tree first showed 1 and WANT
agents (milliseconds since navigation) in ``window.__treeAt``."""


def open_url(
    browser: Browser,
    base_url: str,
    token: str,
    size: tuple[int, int] = LAPTOP,
    watch: int | None = None,
    live_within_ms: float = 5000,
) -> tuple[Page, list[str]]:
    """The page of the hub at ``base_url`` (see :func:`open_page`), live within ``live_within_ms``;
    ``watch``: with :data:`WATCH_PAGE` for a tree of that many agents."""
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    if watch is not None:
        page.add_init_script(WATCH_PAGE.replace("WANT", str(watch)))
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base_url}/?token={token}")
    expect(page.get_by_role("status")).to_have_text("live", timeout=live_within_ms)
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


def longest_task_ms(page: Page) -> float:
    """The longest main-thread task of the page so far (0: none over 50 ms), with :data:`WATCH_PAGE`."""
    return float(page.evaluate("Math.max(0, ...window.__longTasks)"))


def publish_live(portal: BlockingPortal, hub: Hub, agent_id: str, kind: str, **data: object) -> None:
    """An ephemeral event (``model.delta``, ``tool.output``) of ``agent_id`` handed to every
    subscriber, the page's WebSocket included, without the journal: as the hub streams them."""
    publish_burst(portal, hub, [(agent_id, kind, data)])


def publish_burst(portal: BlockingPortal, hub: Hub, events: list[tuple[str, str, dict[str, object]]]) -> None:
    """Each ``(agent_id, kind, data)`` published as :func:`publish_live` does, all in one turn of
    the hub's event loop: a burst."""
    bus = hub._bus  # pyright: ignore[reportPrivateUsage]
    parsed = [(agent_id, OtherEvent.model_validate({"type": kind, **data})) for agent_id, kind, data in events]

    def publish() -> None:
        for agent_id, event in parsed:
            EventBus.publish(bus, agent_id, event)

    portal.call(publish)
