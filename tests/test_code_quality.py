"""The checks every change must pass: ruff on the whole tree, strict pyright on hub/ and servers/, and
the rooms' import order (import-linter's contracts in pyproject.toml)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False, env=env)


@pytest.mark.parametrize("check", ["lint", "format"])
def test_ruff_is_clean(check: str) -> None:
    args = ["check"] if check == "lint" else ["format", "--check"]
    done = _run(str(BIN / "ruff"), *args, "hub", "servers", "tests", "bench")
    assert done.returncode == 0, done.stdout + done.stderr


def test_pyright_strict_is_clean_on_hub_and_servers() -> None:
    done = _run(str(BIN / "pyright"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 errors" in done.stdout


def test_rooms_import_only_the_rooms_below_them_and_servers_import_nothing_of_the_hub() -> None:
    # The editable install maps dispatch.hub -> hub/ through an import hook that import-linter cannot
    # walk; .typecheck/dispatch links the two folders as a plain package tree (as for pyright).
    env = {**os.environ, "PYTHONPATH": str(ROOT / ".typecheck")}
    done = _run(str(BIN / "lint-imports"), "--no-cache", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
