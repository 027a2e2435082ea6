"""The web page with a large tree: a hub with N agents (500), all done, opened in headless
Chromium, then a burst of events. Prints:

- page, first render: from navigation until the tree shows all N agents;
- page, longest task on opening: the longest main-thread task (the Long Tasks API reports those
  over 50 ms; 0 when there was none) from navigation until a second after that render;
- page, burst shown in the tree: from publishing a burst (an ``agent.state`` event for each of the
  N agents, then five ``model.delta`` events for each) until the tree shows every new state;
- page, longest task in the burst, and page, long tasks in the burst: within two seconds of it
  (the page's reloads after the events included).

The hub runs in this process with the shipped scripted model, its API on a free port; the burst is
published on its bus, in the shapes the hub streams. Chromium is Debian's (``chromium`` on PATH).
``--page FILE`` serves another page at ``/`` (an earlier ``web/index.html``, for a before/after on
the same machine).

``python -m bench.web_page [--agents 500] [--page FILE] [--quick]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastapi.responses import HTMLResponse
from playwright.sync_api import sync_playwright

from bench._common import report_value
from dispatch.hub.api.app import create_app
from dispatch.hub.llm.scripted import Reply, ScriptedModel
from tests.api_helpers import MODEL, hub_in_a_thread, served_in_process
from tests.web_ui_helpers import CHROMIUM_ARGS, open_url, publish_burst

TOKEN = "bench-web-page"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _started(url: str, agents: int) -> list[str]:
    """Post ``agents`` agents and wait until every one is done; their ids."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as http:
        for n in range(agents):
            http.post("/api/agents", json={"task": f"[page-{n}] answer", "model": MODEL}).raise_for_status()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            listed = http.get("/api/agents").json()
            if len(listed) == agents and all(a["state"] == "done" for a in listed):
                return [str(a["id"]) for a in listed]
            time.sleep(0.2)
    raise SystemExit(f"the {agents} agents did not finish within 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--page", type=Path, help="serve this HTML file at / instead of the installed page")
    parser.add_argument("--quick", action="store_true", help="50 agents")
    args = parser.parse_args()
    agents = 50 if args.quick else args.agents
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("needs chromium on PATH (apt-get install chromium)")
    model = ScriptedModel()
    for n in range(agents):
        model.script(f"[page-{n}]", [Reply(text=f"agent {n} done")])
    with (
        tempfile.TemporaryDirectory() as tmp,
        hub_in_a_thread(Path(tmp), model) as (portal, hub),
    ):
        app = create_app(hub, token=TOKEN)
        if args.page is not None:
            html = args.page.read_text()
            app.router.add_route("/", lambda _: HTMLResponse(html), include_in_schema=False)
            app.router.routes.insert(0, app.router.routes.pop())
        with served_in_process(portal, app) as url, sync_playwright() as playwright:
            ids = _started(url, agents)
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                page, errors = open_url(browser, url, TOKEN, watch=agents, live_within_ms=120_000)
                page.wait_for_function(f"window.__treeAt[{agents}] !== undefined", timeout=120_000)
                page.wait_for_timeout(1000)
                first_render = float(page.evaluate(f"window.__treeAt[{agents}]"))
                opening = [float(d) for d in page.evaluate("window.__longTasks")]

                burst_events: list[tuple[str, str, dict[str, object]]] = [
                    (agent_id, "agent.state", {"state": "waiting_user", "reason": "a burst"}) for agent_id in ids
                ]
                for chunk in range(5):
                    delta: dict[str, object] = {"step": 1, "text": f"chunk {chunk} ", "tool": None}
                    burst_events += [(agent_id, "model.delta", delta) for agent_id in ids]
                started = time.perf_counter()
                publish_burst(portal, hub, burst_events)
                page.wait_for_function(
                    f"document.querySelectorAll('#tree .state.waiting_user').length >= {agents}", polling="raf"
                )
                shown = time.perf_counter() - started
                page.wait_for_timeout(2000)
                burst = [float(d) for d in page.evaluate("window.__longTasks")][len(opening) :]
                page.close()
            finally:
                browser.close()
    report_value(f"page, first render, {agents} agents", first_render, "ms")
    report_value("page, longest task on opening", max(opening, default=0), "ms")
    report_value("page, burst shown in the tree", shown * 1000, "ms")
    report_value("page, longest task in the burst", max(burst, default=0), "ms")
    report_value("page, long tasks in the burst", len(burst), "tasks")
    if errors:
        print("console errors:", *errors, sep="\n  ")


if __name__ == "__main__":
    main()
