"""Helpers for the adversarial sandbox tests: an approvals double, servers built the way the hub
builds them, MCP calls, and checks that nothing outside the grants changed and the host is fine."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import TextContent

from dispatch.servers import shell
from dispatch.servers._base import MCPServer
from dispatch.servers.fs import server as fs
from dispatch.servers.hublink import AccessDecision, Operation
from dispatch.servers.sandbox import SandboxLauncher, SandboxProbe, probe_sandbox

PROBE = probe_sandbox()
needs_bwrap = pytest.mark.skipif(
    not PROBE.has_bwrap,
    reason=f"needs bubblewrap: {PROBE.bwrap_problem or 'not installed (apt-get install bubblewrap)'}",
)
needs_landlock = pytest.mark.skipif(not PROBE.landlock_abi, reason="the kernel offers no Landlock")
can_hide_bwrap = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="hiding bubblewrap needs root and unshare (util-linux)"
)
UNUSABLE_BWRAP = """#!/bin/sh
echo 'bwrap: No permissions to create a new namespace, likely because the kernel does not allow' \\
  'non-privileged user namespaces.' >&2
exit 1
"""


def bwrap_hidden(argv: Sequence[str], folder: Path) -> list[str]:
    """``argv`` run where bubblewrap is installed but unusable, as in a container: in a private
    mount namespace (``unshare -m``) with a stand-in that fails as bwrap does there bound over the
    real one. The host's bwrap is untouched. Needs root (:data:`can_hide_bwrap`)."""
    fake = folder / "unusable-bwrap"
    fake.write_text(UNUSABLE_BWRAP)
    fake.chmod(0o755)
    real = shutil.which("bwrap")
    if real is None:  # not installed: already as on such a machine
        return list(argv)
    bind = 'mount --bind "$0" "$1" && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", bind, str(fake), real, *argv]


needs_process_limit = pytest.mark.skipif(
    PROBE.pids_cgroup is None and os.geteuid() == 0, reason="no process limit holds for root without a pids cgroup"
)


@dataclass
class Approvals:
    """A double of the hub's approvals (``HubLink.request_access``): records every request and
    answers with ``decide`` (deny everything by default)."""

    decide: Callable[[str, Operation], AccessDecision] = field(
        default=lambda path, op: AccessDecision(granted=False, reason="denied by the test")
    )
    asked: list[tuple[str, Operation, str]] = field(default_factory=list[tuple[str, Operation, str]])

    async def __call__(self, path: str, op: Operation, why: str) -> AccessDecision:
        self.asked.append((path, op, why))
        return self.decide(path, op)

    @property
    def requests(self) -> list[tuple[str, Operation]]:
        return [(path, op) for path, op, _ in self.asked]

    @classmethod
    def granting(cls, remember: str = "session") -> Approvals:
        return cls(lambda path, op: AccessDecision(granted=True, remember=remember, reason="granted by the test"))  # type: ignore[arg-type]


def sandboxed_shell(
    root: Path,
    ask: Approvals | None = None,
    write: Sequence[Path] | None = None,
    probe: SandboxProbe | None = None,
    **options: Any,
) -> MCPServer:
    """A shell server built as the hub builds one: sandboxed to ``root`` (write: ``write``)."""
    launcher = SandboxLauncher.create(root, [root] if write is None else write, probe or PROBE)
    return shell.build_server(root, launcher=launcher, ask=ask, **options)


def fs_server(root: Path, ask: Approvals | None = None, write: Sequence[Path] | None = None) -> MCPServer:
    return fs.build_server(root, write, ask=ask)


async def tool(client: Client, name: str, **arguments: Any) -> tuple[str, bool]:
    """(text, is_error) of one tool call, failing the test if it hangs."""
    with anyio.fail_after(120):
        result = await client.call_tool(name, arguments)
    text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
    return text, result.is_error


async def run(client: Client, command: str, timeout_s: float = 20, **extra: Any) -> str:
    text, is_error = await tool(client, "run", command=command, timeout_s=timeout_s, **extra)
    assert not is_error, text
    return text


def snapshot(*tops: Path) -> dict[str, str]:
    """Every path under ``tops`` with a digest of what it is (type, mode, content), symlinks unfollowed."""
    seen: dict[str, str] = {}
    for top in tops:
        if not top.exists() and not top.is_symlink():
            continue
        for path in [top, *top.rglob("*")]:
            st = path.lstat()
            kind = "link:" + os.readlink(path) if path.is_symlink() else "dir" if path.is_dir() else "file"
            body = hashlib.sha256(path.read_bytes()).hexdigest() if kind == "file" and path.is_file() else ""
            seen[str(path)] = f"{kind} {st.st_mode:o} {body}"
    return seen


def absent(path: str | Path) -> bool:
    return not os.path.lexists(path)


@contextmanager
def loopback_listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP server on 127.0.0.1: its port, and what each connection that reached it sent."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    accepted: list[str] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(3)
            try:
                accepted.append(conn.recv(100).decode(errors="replace"))
            except OSError:
                accepted.append("")
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        listener.close()


def host_is_usable() -> None:
    """The machine still starts processes promptly and has no leftover sandbox cgroups of ours."""
    started = time.monotonic()
    done = subprocess.run(["bash", "-c", "echo alive"], capture_output=True, text=True, timeout=30, check=False)
    assert done.stdout == "alive\n"
    assert time.monotonic() - started < 10
    if PROBE.pids_cgroup is not None:  # the hub's own stays; its agents' and commands' go when they end
        deadline = time.monotonic() + 5
        hub = PROBE.pids_cgroup / f"dispatch-{os.getpid()}"
        while (left := sorted(p for p in hub.glob("*") if p.is_dir())) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"sandbox cgroups left behind: {left}"


def running(marker: str, wait_s: float = 3.0) -> bool:
    """Whether a live process has ``marker`` in its command line (waits for it to go first)."""
    deadline = time.monotonic() + wait_s
    while True:
        alive = False
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if marker not in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    continue
                if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    alive = True
            except (OSError, IndexError):
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)
