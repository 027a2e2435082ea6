"""What this machine offers the sandbox, found by trying it: bubblewrap, Landlock, openat2, a
process-count limit. ``dispatch doctor`` prints it; the hub chooses the shell's mode from it."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from . import landlock, openat2
from .pids import pids_base

__all__ = ["SandboxProbe", "probe_sandbox"]

Status = Literal["ok", "missing", "off"]
_BASE = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--die-with-parent"]
_USERNS = ["--unshare-user", "--uid", "1000", "--gid", "1000", "--disable-userns"]


@dataclass(frozen=True)
class SandboxProbe:
    """The findings; build one by hand to test a machine that lacks something."""

    bwrap: str | None = None
    """The bwrap executable that ran a test command, or None."""
    bwrap_version: str = ""
    bwrap_problem: str = ""
    userns: bool = False
    """bwrap could make a user namespace (a non-zero uid inside)."""
    landlock_abi: int = 0
    openat2: bool = False
    pids_cgroup: Path | None = None

    @property
    def has_bwrap(self) -> bool:
        return self.bwrap is not None

    @property
    def any_layer(self) -> bool:
        """Whether shell commands can be confined at all (bubblewrap, Landlock, or both)."""
        return self.has_bwrap or self.landlock_abi > 0

    def layers(self) -> str:
        """``bubblewrap + Landlock ABI 7``, ``Landlock ABI 7 only``, ..., or ``none``."""
        names: list[str] = []
        if self.bwrap is not None:
            names.append("bubblewrap")
        if self.landlock_abi:
            names.append(f"Landlock ABI {self.landlock_abi}")
        if not names:
            return "none"
        return " + ".join(names) + ("" if len(names) > 1 else " only")

    def findings(self) -> list[tuple[str, str, Status]]:
        """(topic, text, status) lines for ``dispatch doctor``."""
        rows: list[tuple[str, str, Status]] = []
        if self.bwrap is not None:
            how = "user namespace, uid 1000 inside" if self.userns else "no user namespace: --cap-drop ALL"
            rows.append(("bubblewrap", f"{self.bwrap_version or self.bwrap} works ({how})", "ok"))
        else:
            fix = self.bwrap_problem or "not installed (apt-get install bubblewrap)"
            rows.append(("bubblewrap", fix, "missing"))
        if self.landlock_abi:
            rows.append(("landlock", f"ABI {self.landlock_abi}", "ok"))
        else:
            rows.append(("landlock", "not offered by this kernel (Linux 5.13+ needed)", "missing"))
        if self.openat2:
            rows.append(("openat2", "RESOLVE_BENEATH works", "ok"))
        else:
            rows.append(("openat2", "missing (Linux 5.6+): the fs tools cannot confine paths", "missing"))
        if self.pids_cgroup is not None:
            where = f"limited per command, per agent and per hub by cgroup pids.max under {self.pids_cgroup}"
            rows.append(("processes", where, "ok"))
        elif os.geteuid() != 0 and self.landlock_abi:
            rows.append(("processes", "limited per command by RLIMIT_NPROC (set by the Landlock helper)", "ok"))
        elif os.geteuid() != 0:
            rows.append(
                (
                    "processes",
                    "no limit: no writable pids cgroup, and no Landlock helper to set RLIMIT_NPROC",
                    "missing",
                )
            )
        else:
            rows.append(("processes", "no limit: running as root without a writable pids cgroup", "missing"))
        return rows

    def summary(self) -> str:
        """One line for the agent's system prompt and the logs."""
        return f"shell sandbox: {self.layers()}"


def _bwrap_runs(bwrap: str, extra: list[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            [bwrap, *extra, *_BASE, "--", "/bin/true"],
            capture_output=True,
            text=True,
            timeout=20,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, str(error)
    return done.returncode == 0, done.stderr.strip()


def _bwrap_version(bwrap: str) -> str:
    try:
        done = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


@cache
def probe_sandbox() -> SandboxProbe:
    """Try each layer once per process (a few milliseconds of bwrap) and say what works."""
    found = shutil.which("bwrap")
    bwrap: str | None = None
    userns = False
    problem = ""
    if found is not None:
        drop = ["--cap-drop", "ALL"] if os.geteuid() == 0 else []
        ok, problem = _bwrap_runs(found, [*_USERNS, *drop])
        userns = ok
        if not ok:
            ok, problem = _bwrap_runs(found, drop)
        if ok:
            bwrap, problem = found, ""
        else:
            problem = f"{found} is installed but cannot make a sandbox here: {problem}"
    return SandboxProbe(
        bwrap=bwrap,
        bwrap_version=_bwrap_version(bwrap) if bwrap else "",
        bwrap_problem=problem,
        userns=userns,
        landlock_abi=landlock.abi(),
        openat2=openat2.available(),
        pids_cgroup=pids_base(),
    )
