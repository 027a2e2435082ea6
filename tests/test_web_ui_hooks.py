"""A tool call the config's PreToolUse hook blocked, in the web UI (a real headless Chromium against
``dispatch serve``, a real hook script): its card in the agent's transcript is an error result
that says the hook's reason, like any failed call."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from playwright.sync_api import Browser, expect

from tests.agent_helpers import call
from tests.api_helpers import MODEL, ServedHub, serving
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.web_ui_helpers import open_page

REASON = "listing is off: read the README instead"


def _until_done(served: ServedHub, agent_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        agent = httpx.get(f"{served.base_url}/api/agents/{agent_id}", headers=served.auth, timeout=30).json()
        if agent["state"] == "done":
            return
        time.sleep(0.1)
    raise AssertionError(f"agent {agent_id} did not finish")


def test_a_blocked_call_shows_as_an_error_card_with_the_hooks_reason(
    scripted_llm: ScriptedLLM, project: Path, browser: Browser
) -> None:
    (project / ".dispatch").mkdir()
    guard = {"type": "command", "command": f"echo '{REASON}' >&2; exit 2"}
    config = {"hooks": {"PreToolUse": [{"matcher": "list_dir", "hooks": [guard]}]}}
    (project / ".dispatch" / "config.yaml").write_text(json.dumps(config))
    scripted_llm.script("[ui-hook]", [Reply(tool_calls=[call("list_dir", path=".")]), Reply(text="read the README")])

    with serving(project, "--deadline", "5") as served:
        started = httpx.post(
            served.base_url + "/api/agents",
            headers=served.auth,
            json={"task": "[ui-hook] look around", "model": MODEL},
            timeout=30,
        )
        assert started.status_code == 201, started.text
        _until_done(served, started.json()["id"])
        page, errors = open_page(browser, served)
        page.locator("#tree button.agent").first.click()
        card = page.get_by_label("tool call list_dir, error")
        expect(card).to_be_visible()
        card.locator("summary").click()
        expect(card).to_contain_text(f"Error: not run: a PreToolUse hook blocked list_dir: {REASON}")
        page.close()
    assert errors == []
