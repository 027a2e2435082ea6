"""The ``models:`` config section: what it accepts, and errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dispatch.hub.config.project import load_config
from dispatch.hub.errors import ConfigError
from dispatch.hub.llm.models_config import Budget, ModelsConfig, load_models_section
from dispatch.hub.llm.providers import known_providers
from dispatch.hub.llm.types import Usage


def section(**extra: Any) -> dict[str, Any]:
    keys = [
        {
            "provider": "anthropic",
            "key": "${ANTHROPIC_KEY_1}",
            "budget": "$50/month",
            "models": {"claude-opus-4": {"tags": ["heavy", "coding"]}},
        },
        {
            "name": "openai-main",
            "provider": "openai",
            "key": "${OPENAI_KEY_1}",
            "budget": "$5/day",
            "models": {"gpt-4o": {"tags": ["medium"]}},
        },
        {
            "provider": "deepseek",
            "base_url": "http://127.0.0.1:1/v1",
            "budget": "$100 total",
            "models": {"local": {"input_usd_per_mtok": 0.5, "output_usd_per_mtok": 1}},
        },
    ]
    return {"keys": keys, **extra}


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_KEY_1", "sk-ant-one")
    monkeypatch.setenv("OPENAI_KEY_1", "sk-oai-one")


def test_the_requirements_example_loads_with_names_budgets_order_and_defaults() -> None:
    models = load_models_section(section(fallback_order=["${OPENAI_KEY_1}", "anthropic-1"]), "config.yaml")

    assert [k.name for k in models.keys] == ["anthropic-1", "openai-main", "deepseek-3"]
    assert [k.name for k in models.ordered_keys()] == ["openai-main", "anthropic-1", "deepseek-3"]
    assert models.keys[0].key is not None and models.keys[0].key.get_secret_value() == "sk-ant-one"
    assert models.keys[0].key_ref == "${ANTHROPIC_KEY_1}"
    assert "sk-ant-one" not in repr(models)
    assert [str(k.budget) for k in models.keys] == ["$50/month", "$5/day", "$100 total"]
    assert models.keys[2].budget == Budget(amount_usd=100, window="total")
    prices = models.keys[2].models["local"].prices
    assert prices is not None
    assert prices.cost_usd(Usage(prompt_tokens=1_000_000, completion_tokens=2_000_000)) == pytest.approx(2.5)
    assert models.keys[0].litellm_model("claude-opus-4") == "anthropic/claude-opus-4"
    assert (models.probe_interval, models.keys[0].base_url) == (60.0, None)
    assert load_models_section({"probe_interval": "2m"}, "c.yaml").probe_interval == 120.0
    assert load_models_section(None, "c.yaml") == ModelsConfig()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"provider": "antropic"}, "config.yaml: models.keys[0].provider: unknown provider 'antropic'"),
        ({"budget": "$50/mo"}, "config.yaml: models.keys[0].budget: budget '$50/mo': expected '$AMOUNT/day'"),
        ({"budget": "50 dollars"}, "config.yaml: models.keys[0].budget: budget '50 dollars'"),
        (
            {"key": "${NOT_SET_ANYWHERE}"},
            "config.yaml: models.keys[0].key: environment variable NOT_SET_ANYWHERE is not set",
        ),
        ({"key": "${EMPTY_KEY}"}, "config.yaml: models.keys[0].key: environment variable EMPTY_KEY is empty"),
        ({"models": {}}, "config.yaml: models.keys[0].models: Dictionary should have at least 1 item"),
        ({"modles": {}}, "config.yaml: models.keys[0].modles: Extra inputs are not permitted"),
        (
            {"models": {"gpt-4.5": {"input_usd_per_mtok": 1}}},
            "config.yaml: models.keys[0].models['gpt-4.5']: give both",
        ),
        (
            {"models": {"gpt-4.5": {"cache_read_usd_per_mtok": 0.1}}},
            "models.keys[0].models['gpt-4.5']: cache_read_usd_per_mtok is given without input_usd_per_mtok",
        ),
    ],
)
def test_bad_key_fields_name_the_file_and_the_field(
    change: dict[str, Any], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMPTY_KEY", "")
    data = section()
    data["keys"][0] = {**data["keys"][0], **change}
    with pytest.raises(ConfigError) as raised:
        load_models_section(data, "config.yaml")
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"fallback_order": ["openai-main", "nobody"]}, "models: fallback_order[1]: 'nobody' names no key"),
        ({"probe_interval": 0.5}, "models.probe_interval: Input should be greater than or equal to 1"),
        ({"probe_interval": "soon"}, "models.probe_interval: 'soon': expected seconds"),
        ({"kyes": []}, "models.kyes: Extra inputs are not permitted"),
    ],
)
def test_bad_section_fields_name_the_file_and_the_field(extra: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=r"^c\.yaml: ") as raised:
        load_models_section(section(**extra), "c.yaml")
    assert expected in str(raised.value)


def test_duplicate_key_names_are_refused() -> None:
    data = section()
    data["keys"][1]["name"] = "anthropic-1"
    with pytest.raises(ConfigError, match="two keys are named 'anthropic-1'"):
        load_models_section(data, "c.yaml")


def test_the_config_file_carries_the_models_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / ".dispatch").mkdir(parents=True)
    config_file = project / ".dispatch" / "config.yaml"
    config_file.write_text(
        "models:\n"
        "  keys:\n"
        "    - provider: openai\n"
        "      key: ${OPENAI_KEY_1}\n"
        "      budget: $30/month\n"
        "      models:\n"
        "        gpt-4o-mini: {tags: [light]}\n"
        "  fallback_order:\n"
        "    - ${OPENAI_KEY_1}\n"
        "  probe_interval: 5\n"
    )
    loaded = load_config(project).config.models
    assert [k.name for k in loaded.ordered_keys()] == ["openai-1"]
    assert loaded.fallback_order == ["openai-1"] and loaded.probe_interval == 5

    config_file.write_text(config_file.read_text().replace("$30/month", "$30 a month"))
    with pytest.raises(ConfigError) as raised:
        load_config(project)
    assert "config.yaml line 5: models.keys[0].budget: budget '$30 a month'" in str(raised.value)


def test_the_provider_list_comes_from_litellm() -> None:
    import litellm

    names = {str(p.value) for p in litellm.provider_list}
    assert {"openai", "anthropic", "deepseek", "openrouter"} <= known_providers()
    assert names <= known_providers()
