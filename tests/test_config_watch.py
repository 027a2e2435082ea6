"""Config that follows edits: templates, skills and config files changed while the hub runs are
used by agents started afterwards; a bad edit is reported and the last good version stays."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.service.config_watch import ConfigWatch, Reloaded

pytestmark = pytest.mark.anyio

TEMPLATE = """name: helper
description: helps
instructions: {words}
tools: {{fs: true}}
"""


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
