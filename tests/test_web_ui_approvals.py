"""The web UI's controls over running agents, in one page on one hub: cancel a running agent; deny
a checkpoint (the agent stops, saying why); answer path prompts for the session and for always
(the second is written to the project config); watch an auto-approve countdown run out."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, Locator, Page, expect

from tests.agent_helpers import call
from tests.api_helpers import ServedHub, serving
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM, Step
from tests.web_ui_helpers import PHONE, open_page, start_agent, write_template

AUTO_APPROVE_S = 6


@pytest.fixture
def hub(scripted_llm: ScriptedLLM, project: Path) -> Iterator[ServedHub]:
    """The hub of a project with three templates: ``reader`` (no checkpoint), ``careful`` (asks
    before its report) and ``timed`` (its report is approved by itself unless the user answers)."""
    tools = "tools:\n  fs: true\n"
    write_template(project, "reader", f"description: reads files\n{tools}")
    write_template(project, "careful", f"description: asks first\n{tools}checkpoints: [report]\n")
    write_template(project, "timed", f"description: waits a little\n{tools}checkpoints:\n  report: auto_approve 6s\n")
    with serving(project, "--deadline", "5") as served:
        yield served


def _agent(page: Page, agent_id: str) -> Locator:
    return page.locator(f'#tree button.agent[data-agent-id="{agent_id}"]')


def _card(page: Page, text: str) -> Locator:
    return page.locator("#approvals .card").filter(has_text=text)


def _cancel_a_running_agent(page: Page, hub: ServedHub, scripted_llm: ScriptedLLM) -> None:
    working, release = threading.Event(), threading.Event()

    async def long_step(_: RecordedRequest) -> Reply:
        working.set()
        await asyncio.to_thread(release.wait, 60)
        return Reply(text="never seen")

    scripted_llm.script("[ui-cancel]", [long_step])
    try:
        agent = _agent(page, start_agent(hub, "[ui-cancel] a long job", "reader"))
        assert working.wait(60)
        expect(agent).to_contain_text("running")
        agent.click()
        page.get_by_role("button", name="Cancel agent").click()
        expect(agent).to_contain_text("cancelled")
        expect(page.get_by_role("button", name="Cancel agent")).to_be_disabled()
        expect(page.get_by_role("button", name="Switch model")).to_be_disabled()
        expect(page.get_by_role("button", name="Send message")).to_be_disabled()
    finally:
        release.set()


def _deny_a_checkpoint(page: Page, hub: ServedHub, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script("[ui-deny]", [Reply(text="a risky plan")])
    agent = _agent(page, start_agent(hub, "[ui-deny] make a plan", "careful"))
    card = _card(page, "a risky plan")
    expect(card).to_contain_text("checkpoint before_report")
    expect(agent).to_contain_text("waiting for your approval at checkpoint before_report")
    card.get_by_role("button", name="Deny").click()
    expect(agent).to_contain_text("failed")
    expect(agent).to_contain_text("the report was denied by the user")
    expect(page.locator("#approvals")).to_contain_text("Nothing to approve.")


def _answer_path_prompts(page: Page, hub: ServedHub, scripted_llm: ScriptedLLM, outside: Path, tmp_path: Path) -> None:
    """A read outside the root is asked; ``session`` covers what lies beneath it (not asked again);
    ``always`` lands in the project's ``permissions.auto_allow``."""
    other = outside.parent / "other" / "b.txt"
    steps: list[Step] = [
        Reply(tool_calls=[call("list_dir", path=str(outside))]),
        Reply(tool_calls=[call("read_file", path=str(outside / "a.txt"))]),
        Reply(tool_calls=[call("read_file", path=str(other))]),
        Reply(text="read both"),
    ]
    scripted_llm.script("[ui-path]", steps)
    agent = _agent(page, start_agent(hub, "[ui-path] read the data", "reader"))
    card = _card(page, str(outside))
    expect(card).to_contain_text(f"read {outside}")
    expect(card).to_contain_text("reader")  # the chain: just the one top agent
    expect(agent).to_contain_text("waiting for your approval")
    page.screenshot(path=str(tmp_path / "web-ui-path-prompt.png"), full_page=True)
    card.get_by_label("remember decision", exact=False).select_option("session")
    card.get_by_role("button", name="Approve").click()

    card = _card(page, str(other))  # the next prompt: a.txt, beneath the session grant, was not asked
    expect(card).to_contain_text(f"read {other}")
    card.get_by_label("remember decision", exact=False).select_option("always")
    card.get_by_role("button", name="Approve").click()
    expect(agent).to_contain_text("done")
    agent.click()
    expect(page.get_by_label("transcript")).to_contain_text("alpha")  # a.txt, read under the session grant
    expect(page.get_by_label("transcript")).to_contain_text("beta")

    asked = httpx.get(hub.base_url + "/api/approvals?state=all", headers=hub.auth).json()
    assert [a["path"] for a in asked if a["kind"] == "path"] == [str(outside), str(other)]
    config = yaml.safe_load((outside.parent / "project" / ".dispatch" / "config.yaml").read_text())
    assert config["permissions"]["auto_allow"] == [str(other)]


def _watch_an_auto_approve_count_down(page: Page, hub: ServedHub, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script("[ui-timed]", [Reply(text="the timed plan")])
    agent = _agent(page, start_agent(hub, "[ui-timed] plan in time", "timed"))
    countdown = _card(page, "the timed plan").locator(".countdown")
    expect(countdown).to_have_text(re.compile(r"auto-approves in \d+s"))
    first = int(re.findall(r"\d+", countdown.inner_text())[0])
    assert 1 < first <= AUTO_APPROVE_S
    expect(countdown).to_have_text(re.compile(rf"auto-approves in ({'|'.join(map(str, range(1, first)))})s"))
    expect(agent).to_contain_text("done", timeout=30_000)  # nobody answered: approved by itself
    expect(page.locator("#approvals")).to_contain_text("Nothing to approve.")


def test_cancel_deny_path_prompts_and_an_auto_approve_countdown(
    scripted_llm: ScriptedLLM, hub: ServedHub, browser: Browser, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_text("alpha")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "b.txt").write_text("beta")
    page, errors = open_page(browser, hub)
    try:
        _cancel_a_running_agent(page, hub, scripted_llm)
        _deny_a_checkpoint(page, hub, scripted_llm)
        _answer_path_prompts(page, hub, scripted_llm, outside, tmp_path)
        page.set_viewport_size({"width": PHONE[0], "height": PHONE[1]})
        _watch_an_auto_approve_count_down(page, hub, scripted_llm)
    finally:
        page.close()
    assert errors == []
