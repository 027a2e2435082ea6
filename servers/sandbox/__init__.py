"""The OS sandbox for the tool servers: kernel-enforced limits, not path checks in Python.

* :mod:`.openat2` opens paths beneath a directory (the ``fs`` server);
* :mod:`.bwrap` and :mod:`.landlock` confine shell commands, :mod:`.pids` caps their processes,
  :mod:`.launcher` puts them together as the shell's ``CommandLauncher``;
* :mod:`.policy` is the always-denied set both servers share, and the environment scrubbing
  for every process started for an agent; :mod:`.guard` puts back the always-denied paths a
  command changed;
* :mod:`.leftovers` names the sandbox's temp folders after their process and sweeps those (and
  the cgroups) of hubs that were killed;
* :mod:`.denials` and :mod:`.asking` turn a refusal into an approval request and a re-run;
* :mod:`.probe` says what this machine offers, :mod:`.choice` picks the shell's mode from it
  and the ``sandbox`` setting (``auto``, ``landlock``, ``off``) and names it;
* :mod:`.output` makes command output safe to show (escapes stripped, binary summarised).

SECURITY.md at the repository root describes the threat model.
"""

from __future__ import annotations

from .choice import SandboxSetting, ShellMode, choose_shell_mode, mode_in_force
from .launcher import Grant, SandboxLauncher
from .pids import ProcessLimits
from .policy import NETWORK, DeniedPaths
from .probe import SandboxProbe, probe_sandbox

__all__ = [
    "NETWORK",
    "DeniedPaths",
    "Grant",
    "ProcessLimits",
    "SandboxLauncher",
    "SandboxProbe",
    "SandboxSetting",
    "ShellMode",
    "choose_shell_mode",
    "mode_in_force",
    "probe_sandbox",
]
