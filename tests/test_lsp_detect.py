"""Language detection, server planning, the ``lsp`` settings model and ``dispatch doctor``: the
parts of the LSP work that start no process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lsprotocol import types
from pydantic import ValidationError

from dispatch.hub.cli.doctor import run_doctor
from dispatch.servers.lsp.client import lsp_converter
from dispatch.servers.lsp.languages import detect, plan_servers
from dispatch.servers.lsp.settings import LanguageOverride, LspSettings


@pytest.fixture
def nowhere(tmp_path: Path) -> str:
    """A search path with no programs on it: every server is missing."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    return str(empty)


def test_detection_by_markers_and_by_files_skipping_vendored_folders(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module x\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tool.py").write_text("x = 1\n")
    (tmp_path / "node_modules" / "dep").mkdir(parents=True)
    (tmp_path / "node_modules" / "dep" / "index.js").write_text("module.exports = 1\n")

    found = detect(tmp_path)

    assert found == {"python": "a *.py file (src/tool.py)", "go": "go.mod"}


def test_plans_name_the_missing_server_and_how_to_install_it(tmp_path: Path, nowhere: str) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "Cargo.toml").write_text("[package]\n")

    plans = {p.language.key: p for p in plan_servers(tmp_path, LspSettings(), nowhere)}

    assert set(plans) == {"python", "rust"}
    assert plans["python"].command is None
    assert "looked for pyright-langserver, basedpyright-langserver, pylsp" in (plans["python"].problem or "")
    assert "install: pip install pyright" in (plans["python"].problem or "")
    assert "rustup component add rust-analyzer" in (plans["rust"].problem or "")


def test_overrides_win_over_detection(tmp_path: Path, nowhere: str) -> None:
    (tmp_path / "go.mod").write_text("module x\n")
    settings = LspSettings(
        go=False, python=LanguageOverride(command=[sys.executable, "-m", "some_server"], settings={"a": 1})
    )

    plans = {p.language.key: p for p in plan_servers(tmp_path, settings, nowhere)}

    assert plans["go"].problem == "go is turned off in the config (lsp.go: false)"
    python = plans["python"]  # configured, so served although no Python file exists
    assert python.detected_by is None and python.from_config and python.problem is None
    assert python.command == (sys.executable, "-m", "some_server") and python.settings == {"a": 1}
    missing = LspSettings(python=LanguageOverride(command=["no-such-language-server"]))
    [plan] = plan_servers(tmp_path / "nothing", missing, nowhere)
    assert plan.problem == (
        "the configured python server 'no-such-language-server' (config lsp.python.command) is not found"
    )


def test_settings_reject_typos_and_wrong_shapes() -> None:
    assert LspSettings.model_validate({"python": {"command": ["pylsp"]}, "go": False}).go is False
    with pytest.raises(ValidationError, match="pyhton"):
        LspSettings.model_validate({"pyhton": {"command": ["pylsp"]}})
    with pytest.raises(ValidationError, match="comand"):
        LspSettings.model_validate({"python": {"comand": ["pylsp"]}})
    with pytest.raises(ValidationError):
        LspSettings.model_validate({"python": {"command": []}})
    schema = LspSettings.model_json_schema()
    assert "workspace/configuration" in schema["$defs"]["LanguageOverride"]["properties"]["settings"]["description"]


def test_converter_parses_a_notebook_selector_without_a_notebook() -> None:
    """pylsp's initialize reply has one; plain pygls 2.1 + lsprotocol 2025 cannot structure it."""
    reply = {"notebookSelector": [{"cells": [{"language": "python"}]}]}

    options = lsp_converter().structure(reply, types.NotebookDocumentSyncOptions)

    [selector] = options.notebook_selector
    assert isinstance(selector, types.NotebookDocumentFilterWithCells) and selector.notebook is None


def test_doctor_lists_languages_servers_and_install_hints(tmp_path: Path, nowhere: str) -> None:
    (tmp_path / "go.mod").write_text("module x\n")
    (tmp_path / "app.py").write_text("x = 1\n")

    text, code = run_doctor(tmp_path, search_path=nowhere)

    assert code == 1
    assert "missing  go      detected by go.mod; no go language server found" in text
    assert "install: go install golang.org/x/tools/gopls@latest" in text
    assert "missing  python  detected by a *.py file (app.py)" in text
    text, code = run_doctor(tmp_path, LspSettings(go=False, python=False), search_path=nowhere)
    assert code == 0 and "off      go      detected by go.mod; go is turned off" in text


def doctor(root: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "dispatch.hub.cli", "doctor", "--root", str(root)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_doctor_command_finds_the_venv_pyright(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")

    done = doctor(tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok       python  detected by pyproject.toml; server pyright-langserver" in done.stdout
    assert "langserver.index.js --stdio" in done.stdout


def test_doctor_command_reads_the_project_config(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module x\n")
    (tmp_path / ".dispatch").mkdir()
    config = tmp_path / ".dispatch" / "config.yaml"
    config.write_text("lsp:\n  go: false\n  python:\n    command: [no-such-language-server]\n")

    done = doctor(tmp_path)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "off      go      detected by go.mod; go is turned off in the config (lsp.go: false)" in done.stdout
    assert "missing  python  configured, not detected; the configured python server" in done.stdout
    config.write_text("lsp:\n  pyhton: false\n")
    done = doctor(tmp_path)
    assert done.returncode == 2 and "pyhton" in done.stderr and "Traceback" not in done.stderr
