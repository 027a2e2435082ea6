"""Checkpoints without agents: template spellings and modes, which shell commands are destructive,
and when changing files becomes "many"."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.errors import ConfigError
from dispatch.hub.policy.checkpoints import MANY_FILES, CheckpointMode, ToolCheckpoints, destructive_command


def test_changing_many_existing_files_is_destructive(tmp_path: Path) -> None:
    for index in range(MANY_FILES + 1):
        (tmp_path / f"f{index}.py").write_text("x")
    tools = ToolCheckpoints(tmp_path)
    both = {"before_destructive", "before_write"}

    def held(path: str) -> str | None:
        found = tools.held("a-1", both, "fs", "edit_file", {"path": path, "old": "x", "new": "y"})
        return found[0] if found else None

    assert [held(f"f{i}.py") for i in range(MANY_FILES - 1)] == ["before_write"] * (MANY_FILES - 1)
    assert held("new.py") == "before_write" and held("f0.py") == "before_write"  # new files and repeats don't count
    assert held(f"f{MANY_FILES - 1}.py") == "before_destructive"
    tools.approved("a-1")
    assert held(f"f{MANY_FILES}.py") == "before_write"
    assert tools.held("a-1", {"before_write"}, "shell", "run", {"command": "rm -rf /"}) is None


@pytest.mark.parametrize(
    ("command", "destructive"),
    [
        ("rm -rf build", True),
        ("cd src && rm old.py", True),
        ("git reset --hard HEAD~1", True),
        ("git -C sub clean -fdx", True),
        ("git checkout -- .", True),
        ("git push --force origin main", True),
        ("find . -name '*.pyc' -delete", True),
        ("bash -c 'git reset --hard'", True),
        ("ls -la", False),
        ("git reset HEAD file", False),
        ("git clean -n", False),
        ("git checkout main", False),
        ("grep -rm 3 TODO .", False),
        ("pytest -q", False),
    ],
)
def test_destructive_commands(command: str, destructive: bool) -> None:
    assert (destructive_command(command) is not None) is destructive


def test_template_checkpoints_take_either_spelling_and_a_mode(tmp_path: Path) -> None:
    templates = tmp_path / ".dispatch" / "templates"
    templates.mkdir(parents=True)
    (templates / "careful.yaml").write_text(
        "model: openai/x\ncheckpoints:\n  plan: ask\n  before_write: off\n  destructive: {auto_approve: 10m}\n"
    )
    (templates / "listed.yaml").write_text("checkpoints: [report, edit]\n")
    catalog = Catalog.load(tmp_path)
    spec = catalog.top_spec("go", model=None, template="careful")
    assert spec.checkpoints == {
        "before_report": CheckpointMode(mode="ask"),
        "before_write": CheckpointMode(mode="off"),
        "before_destructive": CheckpointMode(mode="auto_approve", after_s=600.0),
    }
    assert list(catalog.template("listed").checkpoints) == ["before_report", "before_write"]
    assert type(spec).model_validate_json(spec.model_dump_json()) == spec, "a spec survives the store"
    (templates / "bad.yaml").write_text("checkpoints:\n  report: sometimes\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line 2: checkpoints.report: expected ask, off or"):
        Catalog.load(tmp_path)
