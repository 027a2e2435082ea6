"""The web UI's live side in a real Chromium, against a hub in this process (its bus reachable): a
task typed into the chat streams its model's text, rendered as Markdown, before the model call
ends; streamed tool arguments and a running tool's output show in its card; Markdown renders and a
``<script>`` in a report does not run; the tree's reload of the agents list gets 304 while no
agent changed, and the list once one did; the model pickers list the configured tags and models; a
tree of 500 agents renders and follows a burst of events with no main-thread task over 200 ms
(the Long Tasks API). The streamed events are published on the hub's bus by the test, in the
shapes the hub streams them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from anyio.from_thread import BlockingPortal
from playwright.sync_api import Browser, Page, expect

from dispatch.hub.api.app import create_app
from dispatch.hub.llm.scripted import Reply, ScriptedModel
from dispatch.hub.service.hub import Hub
from tests.agent_helpers import call
from tests.api_helpers import MODEL, hub_in_a_thread, served_in_process
from tests.web_ui_helpers import longest_task_ms, open_url, publish_burst, publish_live

TOKEN = "web-ui-live-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOLD = Reply(text="the final answer", delay_s=3600)
"""A model call that lasts the whole test: what streams is all the page has of it."""
CONFIG = """models:
  keys:
    - provider: openai
      models:
        scripted: {tags: [light, coding]}
        scripted-b: {tags: [heavy]}
"""
HOSTILE = '<script>window.__ran = "script"</script><img src=x onerror="window.__ran = \'img\'">'
MARKDOWN = (
    "## The plan\n\nFirst **read** the code, then:\n\n- write `plan.md`\n- run it\n\n"
    f"```python\nprint('hi')\n```\n\n{HOSTILE}\n"
)


@dataclass
class LiveHub:
    portal: BlockingPortal
    hub: Hub
    model: ScriptedModel
    url: str

    def agents(self) -> list[dict[str, object]]:
        listed = httpx.get(self.url + "/api/agents", headers=AUTH, timeout=30)
        return list(listed.json())

    def publish(self, agent_id: str, kind: str, **data: object) -> None:
        publish_live(self.portal, self.hub, agent_id, kind, **data)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveHub]:
    (tmp_path / "project" / ".dispatch").mkdir(parents=True)
    (tmp_path / "project" / ".dispatch" / "config.yaml").write_text(CONFIG)
    model = ScriptedModel()
    with (
        hub_in_a_thread(tmp_path, model) as (portal, hub),
        served_in_process(portal, create_app(hub, token=TOKEN)) as url,
    ):
        yield LiveHub(portal, hub, model, url)


def _open(browser: Browser, live: LiveHub, watch: int | None = None) -> tuple[Page, list[str]]:
    return open_url(browser, live.url, TOKEN, watch=watch)


def test_a_task_typed_into_the_chat_streams_before_its_model_call_ends(live: LiveHub, browser: Browser) -> None:
    live.model.script("[stream]", [HOLD])
    page, errors = _open(browser, live)
    try:
        box = page.get_by_label("message to dispatch")
        box.fill("[stream] write the plan")
        box.press("Shift+Enter")  # a new line, not sent
        box.type("in two steps")
        expect(box).to_have_value("[stream] write the plan\nin two steps")
        box.press("Enter")  # sent
        expect(page.get_by_label("chat messages")).to_contain_text("in two steps")
        while not live.model.requests_for("[stream]"):
            time.sleep(0.05)
        agent_id = str(live.agents()[0]["id"])

        live.publish(agent_id, "model.delta", step=1, text="## The plan\n\nFirst **re", tool=None)
        live.publish(agent_id, "model.delta", step=1, text="ad** the code, then:\n\n- write", tool=None)
        streamed = page.get_by_label("work in progress").get_by_label("streamed text")
        expect(streamed).to_contain_text("First read the code, then:")
        expect(streamed.locator("h2")).to_have_text("The plan")
        expect(streamed.locator("strong")).to_have_text("read")
        expect(streamed.locator("li")).to_have_text(["write"])
        live.publish(agent_id, "model.delta", step=1, text=" `plan.md`", tool=None)
        expect(streamed.locator("li code")).to_have_text("plan.md")
        assert live.agents()[0]["state"] == "running"  # the model call has not ended
        expect(page.get_by_label("chat messages")).not_to_contain_text("the final answer")

        live.publish(agent_id, "model.delta", step=2, text='{"path": "plan', tool="write_file")
        live.publish(agent_id, "model.delta", step=2, text='.md"', tool="write_file")
        expect(streamed).to_contain_text("calling write_file")
        expect(streamed.locator("pre")).to_have_text('{"path": "plan.md"')

        page.locator("#tree button.agent").first.click()  # its own view streams it too
        expect(page.locator("#agent-live")).to_contain_text('{"path": "plan.md"')
        page.keyboard.press("Escape")  # back to the chat
        expect(page.get_by_label("message to dispatch")).to_be_visible()

        # the step, once its call completes, takes the streamed text's place
        live.publish(
            agent_id, "agent.step", index=2, text=None, tool_calls=["write_file"], tokens_in=1, tokens_out=1, cost_usd=0
        )
        expect(streamed).to_have_count(0)
    finally:
        page.close()
    assert errors == []


def test_a_chat_message_to_its_running_dispatch_agent_shows_its_receipt(live: LiveHub, browser: Browser) -> None:
    live.model.script("[recv]", [Reply(tool_calls=[call("list_dir", path=".")], delay_s=5), HOLD])
    page, errors = _open(browser, live)
    try:
        box = page.get_by_label("message to dispatch")
        box.fill("[recv] look around")
        box.press("Enter")
        while not live.model.requests_for("[recv]"):
            time.sleep(0.05)
        box.fill("and mind the tests")
        box.press("Enter")
        receipts = page.get_by_label("receipts of your messages")
        expect(receipts).to_contain_text("“and mind the tests”: ", timeout=30_000)
        expect(receipts).to_contain_text("delivered at step 1", timeout=30_000)
        expect(page.get_by_label("work in progress").get_by_label("tool call list_dir, done")).to_be_visible()
    finally:
        page.close()
    assert errors == []


def test_a_message_typed_while_the_first_is_on_its_way_is_sent_to_the_same_chat(
    live: LiveHub, browser: Browser
) -> None:
    live.model.script("[race]", [HOLD])
    page, errors = _open(browser, live)
    try:
        # the first message's POST answers late (a busy hub): the next one is typed and sent meanwhile
        page.evaluate(
            """() => {
              const send = window.fetch;
              let held = false;
              window.fetch = (path, options) => {
                if (held || !String(path).endsWith("/messages")) return send(path, options);
                held = true;
                return new Promise((done) => setTimeout(done, 1500)).then(() => send(path, options));
              };
            }"""
        )
        box = page.get_by_label("message to dispatch")
        box.fill("[race] look around")
        box.press("Enter")
        assert box.input_value() == ""  # taken at once, not once its request returns
        box.fill("and mind the tests")
        box.press("Enter")
        expect(page.get_by_label("receipts of your messages")).to_contain_text("and mind the tests", timeout=30_000)
        chats = httpx.get(live.url + "/api/chats", headers=AUTH, timeout=30).json()
        assert [c["title"] for c in chats] == ["[race] look around"]  # one chat, not two
        expect(box).to_have_value("")
    finally:
        page.close()
    assert errors == []


def test_a_running_tool_shows_its_output_in_its_card(live: LiveHub, browser: Browser) -> None:
    live.model.script("[asks]", [Reply(tool_calls=[call("ask_user", question="Which module first?")]), HOLD])
    started = httpx.post(
        live.url + "/api/agents",
        headers=AUTH,
        json={"task": "[asks] plan", "model": MODEL, "detached": True},
        timeout=30,
    )
    assert started.status_code == 201, started.text
    agent_id = started.json()["id"]
    page, errors = _open(browser, live)
    try:
        page.locator(f'#tree button.agent[data-agent-id="{agent_id}"]').click()
        card = page.get_by_label("tool call ask_user, running…")
        expect(card).to_be_visible()
        detail = httpx.get(f"{live.url}/api/agents/{agent_id}", headers=AUTH, timeout=30).json()
        call_id = next(c["id"] for m in detail["transcript"] for c in m.get("tool_calls") or [])
        live.publish(agent_id, "tool.output", call_id=call_id, name="ask_user", text="first line\n")
        live.publish(agent_id, "tool.output", call_id=call_id, name="ask_user", text="second line\n")
        expect(card.get_by_label("output so far")).to_have_text("first line\nsecond line\n")
        expect(card.locator("summary")).to_contain_text('{"question": "Which module first?"}')
        card.locator("summary").click()  # folded by the user: it stays folded while more comes
        live.publish(agent_id, "tool.output", call_id=call_id, name="ask_user", text="third line\n")
        expect(card.get_by_label("output so far")).to_have_text("first line\nsecond line\nthird line\n")
        expect(card.get_by_label("output so far")).to_be_hidden()
    finally:
        page.close()
    assert errors == []


def test_the_tree_reloads_the_agents_list_only_when_it_changed(live: LiveHub, browser: Browser) -> None:
    live.model.script("[kept]", [HOLD])
    page, errors = _open(browser, live)
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/api/agents") else None)
    try:
        with httpx.Client(base_url=live.url, headers=AUTH, timeout=30) as http:
            agent_id = http.post("/api/agents", json={"task": "[kept] wait", "model": MODEL}).json()["id"]
            while not live.model.requests_for("[kept]"):
                time.sleep(0.05)
            row = page.locator("#tree button.agent")
            expect(row).to_have_count(1)
            page.wait_for_timeout(600)  # the reloads after its start
            statuses.clear()
            live.publish(agent_id, "note.seen", text="nothing of the list changes")  # an event: the page reloads
            page.wait_for_timeout(600)
            assert statuses == [304], statuses  # the same list: neither sent again nor drawn again
            http.post(f"/api/agents/{agent_id}/model", json={"model": "openai/scripted-b"})
            page.wait_for_timeout(600)
            assert statuses[1:] and statuses[-1] == 200, statuses  # changed: the new list
            http.post(f"/api/agents/{agent_id}/cancel")
            expect(page.locator("#tree .state.cancelled")).to_have_count(1)
    finally:
        page.close()
    assert errors == []


def test_markdown_renders_and_a_script_in_a_report_does_not_run(live: LiveHub, browser: Browser) -> None:
    live.model.script("[md]", [Reply(text=MARKDOWN)])
    page, errors = _open(browser, live)
    try:
        page.get_by_label("message to dispatch").fill("[md] plan it")
        page.get_by_role("button", name="Send to dispatch").click()
        answer = page.get_by_label("chat messages").locator(".msg.assistant")
        expect(answer).to_contain_text("First read the code, then:", timeout=30_000)
        expect(answer.locator("h2")).to_have_text("The plan")
        expect(answer.locator("strong")).to_have_text("read")
        expect(answer.locator("li")).to_have_text(["write plan.md", "run it"])
        expect(answer.locator("pre code")).to_have_text("print('hi')\n")
        answer.get_by_role("button", name="show the agent that answered").click()
        report = page.locator("#agent-head")
        expect(report.locator("h2")).to_have_text("The plan")  # its report, rendered the same way
        assert page.locator(".md script, .md img").count() == 0
        assert page.evaluate("window.__ran") is None, "a report's markup ran"
        page.get_by_role("button", name="Back to the chat").click()
        expect(page.get_by_label("chat messages")).to_be_visible()
    finally:
        page.close()
    assert errors == []


def test_the_model_pickers_list_the_configured_tags_and_models(live: LiveHub, browser: Browser) -> None:
    live.model.script("[picked]", [Reply(text="done on the light one")])
    page, errors = _open(browser, live)
    try:
        options = page.locator("#model-list option")
        expect(options).to_have_count(5)
        assert [o.get_attribute("value") for o in options.all()] == [
            "coding",
            "heavy",
            "light",
            "openai/scripted",
            "openai/scripted-b",
        ]
        assert page.get_by_label("model of the new agent").get_attribute("list") == "model-list"
        page.get_by_text("Start an agent").click()
        page.get_by_label("task of the new agent").fill("[picked] do it")
        page.get_by_label("model of the new agent").fill("openai/scripted")
        page.get_by_label("task of the new agent").press("Enter")
        expect(page.locator("#agent-head")).to_contain_text("[picked] do it")
        expect(page.locator("#agent-head")).to_contain_text("done on the light one", timeout=30_000)
        assert page.get_by_label("model", exact=True).get_attribute("list") == "model-list"
    finally:
        page.close()
    assert errors == []


def test_a_chat_started_with_a_picked_model_runs_its_dispatch_agent_on_it(live: LiveHub, browser: Browser) -> None:
    live.model.script("[heavy]", [Reply(text="answered on the heavy one")])
    page, errors = _open(browser, live)
    try:
        assert page.get_by_label("model picked for new chats").get_attribute("list") == "model-list"
        page.get_by_label("model picked for new chats").fill("heavy")
        box = page.get_by_label("message to dispatch")
        box.fill("[heavy] think hard")
        box.press("Enter")
        expect(page.get_by_label("chat messages")).to_contain_text("answered on the heavy one", timeout=30_000)
        expect(page.get_by_role("note", name="model of the chat")).to_have_text("This chat uses heavy.")
        (agent,) = live.agents()
        assert agent["model"] == "heavy"  # the chat's pick, not the hub's default (openai/scripted)
        (chat,) = httpx.get(live.url + "/api/chats", headers=AUTH, timeout=30).json()
        assert chat["model"] == "heavy"
    finally:
        page.close()
    assert errors == []


AGENTS = 500


def test_a_tree_of_500_agents_stays_responsive(live: LiveHub, browser: Browser) -> None:
    for n in range(AGENTS):
        live.model.script(f"[fleet-{n}]", [Reply(text=f"agent {n} done", delay_s=1)])
    page, errors = _open(browser, live, watch=AGENTS)
    try:
        with httpx.Client(base_url=live.url, headers=AUTH, timeout=60) as http:
            for n in range(AGENTS):
                started = http.post("/api/agents", json={"task": f"[fleet-{n}] answer", "model": MODEL})
                assert started.status_code == 201, started.text
        rows = page.locator("#tree button.agent")
        expect(rows).to_have_count(AGENTS, timeout=60_000)
        expect(page.locator("#tree .state.done")).to_have_count(AGENTS, timeout=120_000)
        burst: list[tuple[str, str, dict[str, object]]] = [  # and a burst of events
            (str(agent["id"]), "model.delta", {"step": 1, "text": f"chunk {chunk} ", "tool": None})
            for agent in live.agents()
            for chunk in range(5)
        ]
        publish_burst(live.portal, live.hub, burst)
        page.wait_for_timeout(1500)
        during = longest_task_ms(page)

        page.goto(f"{live.url}/?token={TOKEN}")  # opened again, on a hub that has 500 agents
        expect(page.get_by_role("status")).to_have_text("live")
        expect(rows).to_have_count(AGENTS, timeout=60_000)
        page.wait_for_timeout(1000)
        opened = longest_task_ms(page)
        first_render = page.evaluate(f"window.__treeAt[{AGENTS}]")
    finally:
        page.close()
    print(
        f"500 agents: longest task {during:.0f} ms while they ran, {opened:.0f} ms on opening;"
        f" tree in {first_render:.0f} ms"
    )
    assert during <= 200 and opened <= 200, (during, opened)
    assert errors == []
