"""Config that follows edits: templates, skills and config files changed while the hub runs are
used by agents started afterwards; a bad edit is reported and the last good version stays."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.events import HUB, ConfigRefused, ConfigReloaded, Event, EventData
from dispatch.hub.llm.scripted import Reply, Script, ScriptedModel
from dispatch.hub.service.config_watch import ConfigWatch, Reloaded
from dispatch.hub.service.hub import Hub

pytestmark = pytest.mark.anyio

TEMPLATE = """name: helper
description: helps
instructions: {words}
tools: {{fs: true}}
"""


async def _next(events: AsyncIterator[Event], kind: type[EventData]) -> Event:
    with anyio.fail_after(20):
        async for event in events:
            if isinstance(event.data, kind):
                return event
    raise AssertionError(f"no {kind.__name__} event")


async def _answer(hub: Hub, model: ScriptedModel, chat_id: str, text: str) -> None:
    """Post ``text`` and wait until the chat's agent has asked the model."""
    asked = len(model.requests)
    await hub.post_chat_message(chat_id, text)
    await _until(lambda: len(model.requests) > asked, "the chat's agent never asked the model")


async def _until(condition: Callable[[], object], what: str) -> None:
    with anyio.fail_after(20):
        while not condition():
            await anyio.sleep(0.02)
    assert condition(), what


async def test_edits_reach_the_catalog_and_a_bad_edit_keeps_the_last_good_one(tmp_path: Path) -> None:
    root = tmp_path / "project"
    templates = root / ".dispatch" / "templates"
    templates.mkdir(parents=True)
    (templates / "helper.yaml").write_text(TEMPLATE.format(words="first words"))
    reloaded: list[Reloaded] = []
    invalid: list[str] = []
    watch = ConfigWatch(root, Catalog.load(root), on_reload=reloaded.append, on_invalid=invalid.append, interval_s=0.05)

    async with anyio.create_task_group() as group:
        group.start_soon(watch.run)
        await anyio.sleep(0.2)
        (templates / "helper.yaml").write_text(TEMPLATE.format(words="second words"))
        await _until(lambda: reloaded, "the edit was not noticed")
        assert reloaded[-1].catalog.template("helper").instructions == "second words"

        (root / ".dispatch" / "config.yaml").write_text("limits: {running_agents: 0}\n")
        await _until(lambda: invalid, "the bad edit was not reported")
        assert "config.yaml" in invalid[0] and "limits.running_agents" in invalid[0]
        assert watch.current.template("helper").instructions == "second words", "the last good catalog stays"

        (root / ".dispatch" / "config.yaml").write_text("limits: {running_agents: 3}\n")
        await _until(lambda: len(reloaded) == 2, "the fix was not picked up")
        assert reloaded[-1].needs_restart == ("limits",)
        assert len(invalid) == 1, "a bad edit is reported once"

        (root / ".skills" / "default").mkdir(parents=True)
        (root / ".skills" / "default" / "house-style.md").write_text("Use tabs.\n")
        await _until(lambda: len(reloaded) == 3, "a new skills folder was not noticed")
        assert any(s.name == "house-style" for s in reloaded[-1].catalog.skills.skills)
        group.cancel_scope.cancel()


async def test_a_running_hub_uses_an_edited_default_model_and_reports_a_bad_edit(tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / ".dispatch").mkdir(parents=True)
    config = root / ".dispatch" / "config.yaml"
    config.write_text("models: {default: first-model}\n")
    model = ScriptedModel([Script(match="hello", steps=[Reply(text="hi"), Reply(text="hi again"), Reply(text="hi")])])

    async with Hub.open(root, tmp_path / "data", model=model) as hub, hub.follow_events() as events:
        first = await hub.create_chat("t")
        await _answer(hub, model, first.id, "hello there")
        config.write_text("models: {default: second-model}\n")
        reloaded = await _next(events, ConfigReloaded)
        second = await hub.create_chat("t2")
        await _answer(hub, model, second.id, "hello again")

        config.write_text("models: {default: second-model}\nlimits: {running_agents: 0}\n")
        refused = await _next(events, ConfigRefused)
        third = await hub.create_chat("t3")
        await _answer(hub, model, third.id, "hello, third")

    assert reloaded.agent_id == HUB and reloaded.data == ConfigReloaded(restart_needed=[])
    assert isinstance(refused.data, ConfigRefused)
    assert "config.yaml" in refused.data.error and "limits.running_agents" in refused.data.error
    assert [r.model for r in model.requests] == ["first-model", "second-model", "second-model"], (
        "the bad edit left the last good default in force"
    )
