"""Which model a chat or run gets when nobody names one: ``models.default``, else the tag ``heavy``,
else the first configured model, else the provider whose key is in the environment; and a missing
key is named at once, before litellm loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from dispatch.hub.errors import UserError
from dispatch.hub.llm.defaults import KEY_VARIABLES, default_model
from dispatch.hub.llm.models_config import load_models_section
from dispatch.hub.service.hub import Hub
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.models_helpers import key, model

pytestmark = pytest.mark.anyio


def _project(root: Path, models: dict[str, Any]) -> Path:
    (root / ".dispatch").mkdir(parents=True)
    (root / ".dispatch" / "config.yaml").write_text(yaml.safe_dump({"models": models}))
    return root


async def _answer_of_first_chat(root: Path, data: Path) -> str:
    async with Hub.open(root, data) as hub:
        chat = await hub.create_chat("t")
        await hub.post_chat_message(chat.id, "[default] which model are you?")
        with anyio.fail_after(60):
            while len((await hub.chat(chat.id)).messages) < 2:
                await anyio.sleep(0.05)
        return (await hub.chat(chat.id)).messages[-1].text


def _two_providers(heavy: ScriptedLLM, light: ScriptedLLM, **extra: Any) -> dict[str, Any]:
    return {
        "keys": [
            key("small-key", "openai", light, {"small": model("light")}),
            key("big-key", "openai", heavy, {"big": model("heavy", "coding")}),
        ],
        **extra,
    }


async def test_a_chat_on_a_config_that_only_tags_models_runs_on_the_heavy_one(
    two: tuple[ScriptedLLM, ScriptedLLM], tmp_path: Path
) -> None:
    heavy, light = two
    heavy.script("[default]", [Reply(text="the heavy one")])
    root = _project(tmp_path / "project", _two_providers(heavy, light))

    answer = await _answer_of_first_chat(root, tmp_path / "data")

    assert answer == "the heavy one"
    assert [r.model for r in heavy.requests] == ["big"] and light.requests == []


async def test_models_default_sends_a_chat_to_the_model_it_names(
    two: tuple[ScriptedLLM, ScriptedLLM], tmp_path: Path
) -> None:
    heavy, light = two
    light.script("[default]", [Reply(text="the light one")])
    root = _project(tmp_path / "project", _two_providers(heavy, light, default="light"))

    answer = await _answer_of_first_chat(root, tmp_path / "data")

    assert answer == "the light one"
    assert heavy.requests == []


def test_the_choice_falls_back_to_the_first_model_then_to_a_key_in_the_environment() -> None:
    untagged = load_models_section({"keys": [{"provider": "openai", "models": {"m1": {}, "m2": {}}}]}, "c.yaml")
    chosen = default_model(untagged, {})
    assert chosen is not None and chosen.model == "m1"
    assert "first model of the key openai-1" in chosen.source

    empty = load_models_section(None, "c.yaml")
    from_env = default_model(empty, {"OPENAI_API_KEY": "sk-x"})
    assert from_env is not None and from_env.model.startswith("openai/")
    assert from_env.source == "OPENAI_API_KEY is set"
    assert default_model(empty, {}) is None


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KEY_VARIABLES.values():
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_keys")
def test_a_missing_key_fails_at_once_naming_the_variable(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dispatch.hub.cli", "run", "say hi", "--model", "anthropic/claude-sonnet-4-6"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: model 'anthropic/claude-sonnet-4-6' has no key: set ANTHROPIC_API_KEY in the environment, "
        "or give the anthropic provider a key under models.keys in the config"
    ]


@pytest.mark.usefixtures("no_keys")
def test_doctor_says_there_is_no_model_and_what_to_set(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dispatch.hub.cli", "doctor", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "no model: set a provider's key (ANTHROPIC_API_KEY" in done.stdout


async def test_an_agent_failed_for_a_missing_key_finishes_after_resume_once_it_is_set(
    scripted_llm: ScriptedLLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted_llm.script("[key-later]", [Reply(text="done, with a key")])
    monkeypatch.delenv("OPENAI_API_KEY")
    root = tmp_path / "project"
    root.mkdir()
    async with Hub.open(root, tmp_path / "data") as hub:
        started = await hub.start("[key-later] say hello", model="openai/scripted")
        with anyio.fail_after(30):
            while (failed := await hub.agent(started.id)).state != "failed":
                await anyio.sleep(0.05)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-set-at-last")
        await hub.resume(started.id)
        with anyio.fail_after(60):
            while (finished := await hub.agent(started.id)).state not in ("done", "failed"):
                await anyio.sleep(0.05)
        with pytest.raises(UserError, match="is done; only an interrupted agent, or one failed by a setup"):
            await hub.resume(started.id)

    assert failed.reason.startswith("setup: model 'openai/scripted' has no key: set OPENAI_API_KEY")
    assert failed.reason.endswith("fix it and resume the agent")
    assert finished.state == "done" and finished.report == "done, with a key" and finished.error is None
    assert len(scripted_llm.requests_for("[key-later]")) == 1
