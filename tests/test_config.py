"""Config files: global and project merged field by field, ``${ENV}`` interpolation, and errors that
name the file, the line, the field and what was expected; with a bad config nothing starts."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from dispatch.hub.config.files import Source
from dispatch.hub.config.project import global_dir, load_config
from dispatch.hub.errors import ConfigError
from dispatch.servers.lsp.settings import LanguageOverride
from tests.fakes.scripted_llm import ScriptedLLM


def global_file(text: str) -> Path:
    path = global_dir() / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def project_file(root: Path, text: str) -> Path:
    path = root / ".dispatch" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def config_error(root: Path) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(root)
    return str(raised.value)


def test_no_files_gives_the_defaults(tmp_path: Path) -> None:
    loaded = load_config(tmp_path)

    assert loaded.files == ()
    assert loaded.config.permissions.auto_allow == []
    assert loaded.config.lsp.python is True


def test_project_wins_field_by_field_and_auto_allow_lists_add_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_DIR", "/srv/data")
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-test-1")
    global_file(
        "permissions:\n  auto_allow: [/tmp, '${DATA_DIR}/in']\n"
        "lsp:\n  python: false\n  go: {command: [gopls, serve]}\n"
        "models:\n  keys:\n    - {name: main, provider: openai, key: '${TEST_OPENAI_KEY}',\n"
        "       models: {gpt-4o: {tags: [medium]}}}\n  probe_interval: 30\n"
    )
    project_file(
        tmp_path,
        "permissions:\n  auto_allow: [/opt/cache, /tmp]\n"
        "lsp:\n  go: false\n  rust: false\nmodels:\n  probe_interval: 5m\n",
    )

    loaded = load_config(tmp_path)

    assert loaded.files == ("~/.config/dispatch/config.yaml", f"{tmp_path}/.dispatch/config.yaml")
    config = loaded.config
    assert config.permissions.auto_allow == ["/tmp", "/srv/data/in", "/opt/cache"]
    assert (config.lsp.python, config.lsp.go, config.lsp.rust, config.lsp.typescript) == (False, False, False, True)
    assert [k.name for k in config.models.keys] == ["main"]
    assert config.models.keys[0].key is not None and config.models.keys[0].key.get_secret_value() == "sk-test-1"
    assert config.models.probe_interval == 300.0


def test_project_override_of_part_of_a_section_keeps_the_rest(tmp_path: Path) -> None:
    global_file("lsp:\n  go: {command: [gopls], settings: {gopls: {staticcheck: true}}}\n")
    project_file(tmp_path, "lsp:\n  go: {command: [/opt/gopls]}\n")

    go = load_config(tmp_path).config.lsp.go

    assert go == LanguageOverride(command=["/opt/gopls"], settings={"gopls": {"staticcheck": True}})


def test_a_missing_environment_variable_names_file_line_and_field(tmp_path: Path) -> None:
    os.environ.pop("NOT_SET_ANYWHERE", None)
    project_file(tmp_path, "permissions:\n  auto_allow:\n    - /tmp\n    - ${NOT_SET_ANYWHERE}/x\n")

    message = config_error(tmp_path)

    assert message == (
        f"{tmp_path}/.dispatch/config.yaml line 4: permissions.auto_allow[1]: expected the environment variable "
        "NOT_SET_ANYWHERE to be set (the value is '${NOT_SET_ANYWHERE}/x')"
    )


def test_dollar_dollar_is_a_literal_dollar(tmp_path: Path) -> None:
    project_file(tmp_path, "permissions:\n  auto_allow: ['/data/$${NOT_SET_ANYWHERE}']\n")

    assert load_config(tmp_path).config.permissions.auto_allow == ["/data/${NOT_SET_ANYWHERE}"]


def test_unknown_and_mistyped_fields_name_file_line_field_and_expectation(tmp_path: Path) -> None:
    global_file("permissions:\n  auto_allow: /tmp\n")
    project_file(tmp_path, "permission:\n  auto_allow: []\nlsp:\n  python: {comand: [pylsp]}\n  go: 3\n")

    lines = config_error(tmp_path).splitlines()

    project = f"{tmp_path}/.dispatch/config.yaml"
    assert lines == [
        "~/.config/dispatch/config.yaml line 2: permissions.auto_allow: expected a list, got '/tmp'",
        f"{project} line 1: permission: unknown field; expected one of: permissions, models, lsp, sandbox, limits, "
        "web, execution, mcp_servers, hooks",
        f"{project} line 4: lsp.python.comand: unknown field; expected one of: command, init_options, settings",
        f"{project} line 5: lsp.go: expected a mapping or true or false, got 3",
    ]


def test_a_name_with_a_dot_is_quoted_in_the_field_path_as_the_models_section_quotes_it(tmp_path: Path) -> None:
    project_file(tmp_path, "models:\n  keys:\n    - name: main\n      provider: openai\n      models: {gpt-4.5: 3}\n")

    [line] = config_error(tmp_path).splitlines()

    where = f"{tmp_path}/.dispatch/config.yaml line 5: models.keys[0].models['gpt-4.5']"
    assert line == f"{where}: expected a mapping, got 3"


def test_yaml_syntax_and_top_level_shape(tmp_path: Path) -> None:
    project_file(tmp_path, "permissions:\n  auto_allow: [/tmp\n")
    assert config_error(tmp_path).startswith(f"{tmp_path}/.dispatch/config.yaml line 3 column 1: not valid YAML")

    project_file(tmp_path, "- just\n- a list\n")
    assert config_error(tmp_path) == (
        f"{tmp_path}/.dispatch/config.yaml: expected a mapping of fields at the top level, got a list"
    )


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_KEY_1", "sk-ant-test")
    monkeypatch.setenv("OPENAI_KEY_1", "sk-openai-test")
    example = files("dispatch.configs") / "example-config.yaml"
    source = Source.read("example-config.yaml", example.read_text())
    global_file(example.read_text())

    config = load_config(Path("/nonexistent-project")).config

    assert config.permissions.auto_allow == ["/tmp"]  # not ~/.config/dispatch: always denied (SECURITY.md)
    assert config.sandbox == "auto"
    first = config.models.ordered_keys()[0]
    assert first.provider == "anthropic" and first.key is not None and first.key.get_secret_value() == "sk-ant-test"
    assert str(first.budget) == "$50/month" and first.models["claude-opus-4"].tags == ["heavy", "coding", "review"]
    assert config.lsp.rust is False
    assert source.lines[("lsp", "rust")] > source.lines[("lsp",)]


def test_dispatch_run_with_a_bad_config_starts_nothing(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    project_file(tmp_path, "permissions:\n  auto_allow: [/tmp]\n  ask_always: true\n")

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dispatch.hub.cli",
            "run",
            "[never] x",
            "-m",
            "openai/scripted",
            "--root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {tmp_path}/.dispatch/config.yaml line 3: permissions.ask_always: unknown field; "
        "expected one of: auto_allow"
    )
    assert "Traceback" not in done.stdout + done.stderr
    assert scripted_llm.requests == []
