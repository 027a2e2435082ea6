"""The checks every change must pass: ruff on the whole tree, strict pyright on hub/ and servers/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize("check", ["lint", "format"])
def test_ruff_is_clean(check: str) -> None:
    args = ["check"] if check == "lint" else ["format", "--check"]
    done = _run(str(BIN / "ruff"), *args, "hub", "servers", "tests", "bench")
    assert done.returncode == 0, done.stdout + done.stderr


def test_pyright_strict_is_clean_on_hub_and_servers() -> None:
    done = _run(str(BIN / "pyright"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 errors" in done.stdout
