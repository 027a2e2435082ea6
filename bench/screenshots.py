"""The README's screenshots of the web UI, taken from ``dispatch demo`` in headless Chromium so they
show the page as it is: the chat with its live tree (``docs/ui-chat.png``), an agent's own view with
its tool calls and changes (``docs/ui-agent.png``), the approvals queue with the dispatch agent's
report waiting (``docs/ui-approvals.png``), and a narrow window in the dark theme
(``docs/ui-narrow-dark.png``).

``python -m bench.screenshots [--out docs]`` (needs ``chromium`` on PATH)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from tests.web_ui_helpers import CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
WAIT_MS = 120_000


def _shoot(page: Page, path: Path, full_page: bool = False) -> None:
    page.wait_for_timeout(400)  # the last frame of any redraw
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=full_page)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("needs chromium on PATH (apt-get install chromium)")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "HOME": tmp}
        demo = subprocess.Popen(
            [sys.executable, "-m", "dispatch.hub.cli", "demo", "--port", "0", "--root", str(Path(tmp) / "sample")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert demo.stdout is not None
            url = demo.stdout.readline().strip()
            if not re.match(r"http://[^/]+/\?token=.+", url):
                sys.exit(f"dispatch demo printed no address: {url!r}")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.goto(url)
                expect(page.get_by_role("status")).to_have_text("live")
                page.locator("#chat-list button").first.click(timeout=WAIT_MS)
                tree = page.locator("#tree button.agent")
                expect(tree).to_have_count(2, timeout=WAIT_MS)
                expect(page.locator("#chat-live .tool-card").first).to_be_visible(timeout=WAIT_MS)
                _shoot(page, out / "ui-chat.png")

                greeter = page.get_by_role("button", name="agent greeter", exact=False)
                expect(greeter).to_contain_text("done", timeout=WAIT_MS)
                greeter.click()
                expect(page.get_by_label("changed files")).to_be_visible(timeout=WAIT_MS)
                page.locator("#transcript .tool-card").first.locator("summary").click()
                _shoot(page, out / "ui-agent.png", full_page=True)
                page.keyboard.press("Escape")

                card = page.locator("#approvals .card").first
                expect(card).to_be_visible(timeout=WAIT_MS)
                _shoot(page, out / "ui-approvals.png")

                narrow = browser.new_page(viewport={"width": 420, "height": 900}, color_scheme="dark")
                narrow.goto(url)
                expect(narrow.get_by_role("status")).to_have_text("live")
                narrow.locator("#chat-list button").first.click()
                expect(narrow.get_by_label("chat messages")).to_be_visible()
                _shoot(narrow, out / "ui-narrow-dark.png")
                browser.close()
        finally:
            demo.send_signal(signal.SIGTERM)
            demo.wait(timeout=60)


if __name__ == "__main__":
    main()
