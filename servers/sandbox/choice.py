"""How the shell runs on this machine, from the probe and the ``sandbox`` setting (``auto|off``).

* ``auto`` with bubblewrap and/or Landlock: every command in a :class:`SandboxLauncher`;
* ``auto`` with neither: the shell tool is disabled, and says why and how to fix it;
* ``off``: no sandbox, and the user approves every command before it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .launcher import SandboxLauncher
from .pids import ProcessLimits
from .probe import SandboxProbe, probe_sandbox

__all__ = ["SandboxSetting", "ShellMode", "choose_shell_mode"]

SandboxSetting = Literal["auto", "off"]

DISABLED = (
    "the shell is disabled: this machine has neither bubblewrap nor Landlock to confine commands. "
    "Install bubblewrap (apt-get install bubblewrap), or set `sandbox: off` in the Dispatch config "
    "to run commands unconfined, each one approved by the user first."
)
UNSANDBOXED = (
    "Shell commands run without a sandbox (the config says `sandbox: off`): the user approves each "
    "command before it runs."
)


@dataclass(frozen=True)
class ShellMode:
    """What the shell server is built with, and the note for the agent's system prompt."""

    sandbox: SandboxLauncher | None
    confirm_each: bool
    refusal: str | None
    note: str


def choose_shell_mode(
    root: Path,
    write: Sequence[Path],
    setting: SandboxSetting = "auto",
    probe: SandboxProbe | None = None,
    limits: ProcessLimits | None = None,
    pids_parent: Path | None = None,
    read: Sequence[Path] | None = None,
) -> ShellMode:
    """The shell's mode for an agent rooted at ``root`` that may write ``write`` and read ``read``
    inside it besides (None: the whole root), its commands' processes capped by ``limits`` (pids
    cgroups under ``pids_parent``, see :class:`SandboxLauncher`)."""
    if setting == "off":
        return ShellMode(None, True, None, UNSANDBOXED)
    found = probe or probe_sandbox()
    if not found.any_layer:
        return ShellMode(None, False, DISABLED, f"The shell tool is unavailable: {DISABLED}")
    launcher = SandboxLauncher.create(root, write, found, limits, pids_parent, read=read)
    return ShellMode(launcher, False, None, launcher.describe())
