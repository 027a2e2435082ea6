"""Helpers for the hub tests: project and data directories, and a hub in a subprocess whose JSON
lines (``tests/hub_process.py``) are collected as they come."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL = "openai/scripted"


def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A project root and a data directory, both under ``tmp_path``."""
    root, data = tmp_path / "project", tmp_path / "data"
    root.mkdir()
    return root, data


@dataclass
class HubProcess:
    """``python -m tests.hub_process`` running; ``lines`` fills in as it prints."""

    process: subprocess.Popen[str]
    lines: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    stderr: list[str] = field(default_factory=list[str])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            if raw.strip():
                self.lines.append(json.loads(raw))

    def _read_errors(self) -> None:
        assert self.process.stderr is not None
        self.stderr.extend(self.process.stderr)

    def wait_for(self, check: Callable[[dict[str, Any]], bool], timeout_s: float = 60.0) -> dict[str, Any]:
        """The first line that passes ``check``; fails when none does in time or the process ends."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if check(line):
                    return line
            if self.process.poll() is not None and not any(check(x) for x in list(self.lines)):
                time.sleep(0.2)  # let the reader catch the last lines
                if not any(check(x) for x in list(self.lines)):
                    break
            time.sleep(0.02)
        raise AssertionError(f"no such line; exit {self.process.poll()}; stderr:\n{''.join(self.stderr)[-3000:]}")

    def events(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if "seq" in line]

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    def finish(self, timeout_s: float = 60.0) -> int:
        code = self.process.wait(timeout=timeout_s)
        time.sleep(0.1)
        return code


def start_hub_process(root: Path, data: Path, task: str, *extra: str) -> HubProcess:
    command = [sys.executable, "-m", "tests.hub_process", "--root", str(root), "--data", str(data), "--task", task]
    process = subprocess.Popen(
        [*command, "--model", MODEL, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
        cwd=Path(__file__).resolve().parent.parent,
    )
    hub = HubProcess(process)
    threading.Thread(target=hub._read, daemon=True).start()  # pyright: ignore[reportPrivateUsage]
    threading.Thread(target=hub._read_errors, daemon=True).start()  # pyright: ignore[reportPrivateUsage]
    return hub
