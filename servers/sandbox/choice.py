"""How the shell runs on this machine, from the probe and the ``sandbox`` setting
(``auto|landlock|off``); :func:`mode_in_force` names it in one line for doctor and the web UI.

* ``auto`` with bubblewrap (and Landlock inside it where the kernel has it): every command in a
  :class:`SandboxLauncher`;
* ``auto`` without a usable bubblewrap: the shell tool is disabled, and its one message says how
  to install bubblewrap, or what ``sandbox: landlock`` would lose;
* ``landlock``: Landlock alone, even where bubblewrap works (an explicit choice of the weaker
  mode; see :func:`~.launcher.landlock_losses`); disabled where the kernel has no Landlock;
* ``off``: no sandbox, and the user approves every command before it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from .launcher import SandboxLauncher, landlock_losses
from .pids import ProcessLimits
from .probe import SandboxProbe, probe_sandbox

__all__ = ["SandboxSetting", "ShellMode", "choose_shell_mode", "mode_in_force", "refusal"]

SandboxSetting = Literal["auto", "landlock", "off"]

INSTALL = "install bubblewrap (apt-get install bubblewrap)"
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


def refusal(setting: SandboxSetting, probe: SandboxProbe) -> str | None:
    """Why the shell is disabled under ``setting`` on this machine (one message, with the fix), or None."""
    if setting == "off":
        return None
    if setting == "landlock":
        if probe.landlock_abi:
            return None
        return (
            "the shell is disabled: the config says `sandbox: landlock` but this kernel offers no Landlock "
            f"(Linux 5.13+). Set `sandbox: auto` and {INSTALL}, or set `sandbox: off` to run commands "
            "unconfined, each one approved by the user first."
        )
    if probe.has_bwrap:
        return None
    if not probe.landlock_abi:
        return (
            "the shell is disabled: neither bubblewrap nor Landlock is available here to confine commands. "
            f"{INSTALL[0].upper()}{INSTALL[1:]}, or set `sandbox: off` in the Dispatch config to run "
            "commands unconfined, each one approved by the user first."
        )
    why = (probe.bwrap_problem or "it is not installed").rstrip(".")
    return (
        f"the shell is disabled: bubblewrap is not usable here ({why}). {INSTALL[0].upper()}{INSTALL[1:]}; "
        "or set `sandbox: landlock` in the Dispatch config to run commands under Landlock alone, which "
        f"loses: {landlock_losses(probe)}; or `sandbox: off` to approve every command yourself."
    )


def mode_in_force(setting: SandboxSetting, probe: SandboxProbe | None = None) -> str:
    """How shell commands run here, in one line: for ``dispatch doctor`` and the web UI."""
    found = probe or probe_sandbox()
    refused = refusal(setting, found)
    if refused is not None:
        return refused
    if setting == "off":
        return "commands run without a sandbox (`sandbox: off`): the user approves each one before it runs"
    if setting == "landlock":
        return (
            f"commands run under Landlock alone (`sandbox: landlock`, ABI {found.landlock_abi}), which loses: "
            f"{landlock_losses(found)}"
        )
    return f"commands run in the sandbox ({found.layers()}) by `sandbox: auto`"


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
    refused = refusal(setting, found)
    if refused is not None:
        return ShellMode(None, False, refused, f"The shell tool is unavailable: {refused}")
    if setting == "landlock":
        found = replace(found, bwrap=None, userns=False)
    launcher = SandboxLauncher.create(root, write, found, limits, pids_parent, read=read)
    return ShellMode(launcher, False, None, launcher.describe())
