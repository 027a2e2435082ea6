"""The ``shell`` tool server: one tool, ``run``, for agents whose grants include the shell.

Its room in the house: the hub mounts it for one agent through :func:`build_server` (in-process),
and ``python -m dispatch.servers.shell --root DIR`` serves the same code over stdio. A command runs
with ``bash -c`` in the project root, in its own process group, with an environment stripped of
credentials; on timeout, and after the command exits, whatever is left of the group is killed.
stdout and stderr are each capped while they stream (head and tail kept, the cut counted).

How a command is started is the :class:`CommandLauncher` seam: :class:`PlainLauncher` today, the
OS sandbox (bubblewrap + Landlock) later, without touching ``run``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread
from anyio.abc import ByteReceiveStream

from ._base import MCPServer, ToolError, existing_root, new_server, root_argument, serve_stdio

__all__ = ["CommandLauncher", "PlainLauncher", "build_server", "clean_environment", "main"]

OUTPUT_LIMIT = 64 * 1024
"""Bytes kept of each stream: the first half and the last half of what the command wrote."""
_GRACE_S = 1.0  # SIGTERM -> SIGKILL
_DRAIN_S = 1.0  # how long to keep reading pipes that an escaped process still holds open
_POLL_S = 0.05
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def clean_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables whose name contains KEY, TOKEN, SECRET or PASSWORD (any case)."""
    return {name: value for name, value in env.items() if not any(w in name.upper() for w in _SECRET_WORDS)}


class CommandLauncher(Protocol):
    """How a command becomes a process: its argv and its environment."""

    def argv(self, command: str, root: Path) -> list[str]:
        """The argv that runs ``command`` with ``root`` as the working directory."""
        ...

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment the process gets, given the server's own."""
        ...


class PlainLauncher:
    """No sandbox: ``bash -c COMMAND`` with a credential-free copy of the environment."""

    def argv(self, command: str, root: Path) -> list[str]:
        return ["bash", "-c", command]

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        return clean_environment(base)


class _Capture:
    """One stream's head and tail, never more than ``limit`` bytes held, and the total seen."""

    def __init__(self, limit: int) -> None:
        self._half = limit // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        if len(self.tail) > self._half:
            del self.tail[: len(self.tail) - self._half]

    async def drain(self, stream: ByteReceiveStream | None) -> None:
        if stream is not None:
            async for chunk in stream:
                self.add(chunk)

    def text(self, name: str) -> str:
        cut = self.total - len(self.head) - len(self.tail)
        if cut == 0:
            return (self.head + self.tail).decode(errors="replace")
        head, tail = self.head.decode(errors="replace"), self.tail.decode(errors="replace")
        return f"{head}\n[... {cut:,} bytes of {name} cut; {self.total:,} bytes in all ...]\n{tail}"


@dataclass(frozen=True)
class _Outcome:
    returncode: int | None
    timed_out: bool
    stdout: _Capture
    stderr: _Capture

    def report(self, timeout_s: float) -> str:
        if self.timed_out:
            lines = [f"timed out after {timeout_s:g}s; process group killed"]
        else:
            lines = [f"exit code: {self.returncode}{_signal_note(self.returncode)}"]
        for name, capture in (("stdout", self.stdout), ("stderr", self.stderr)):
            if capture.total:
                body = capture.text(name).removesuffix("\n")
                lines.append(f"--- {name} ---\n{body}")
        return "\n".join(lines)


def _signal_note(returncode: int | None) -> str:
    """`` (killed by SIGKILL)`` for a negative return code, else nothing."""
    if returncode is None or returncode >= 0:
        return ""
    try:
        return f" (killed by {signal.Signals(-returncode).name})"
    except ValueError:
        return f" (killed by signal {-returncode})"


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs; zombies waiting for a reaper do not count."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue
        if int(pgrp) == pgid and state != "Z":
            return True
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _end_group(pgid: int) -> None:
    """SIGTERM every process left in the group, give them a short grace, then SIGKILL."""
    if not await anyio.to_thread.run_sync(_group_alive, pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    for _ in range(round(_GRACE_S / _POLL_S)):
        await anyio.sleep(_POLL_S)
        if not await anyio.to_thread.run_sync(_group_alive, pgid):
            return
    _signal_group(pgid, signal.SIGKILL)


async def _execute(argv: Sequence[str], root: Path, env: Mapping[str, str], timeout_s: float) -> _Outcome:
    stdout, stderr = _Capture(OUTPUT_LIMIT), _Capture(OUTPUT_LIMIT)
    deadline = anyio.move_on_after(timeout_s)
    async with await anyio.open_process(
        argv, cwd=root, env=env, stdin=subprocess.DEVNULL, start_new_session=True
    ) as process:
        async with anyio.create_task_group() as readers:
            readers.start_soon(stdout.drain, process.stdout)
            readers.start_soon(stderr.drain, process.stderr)
            try:
                with deadline:
                    await process.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    await _end_group(process.pid)
                    with anyio.move_on_after(_GRACE_S):
                        await process.wait()
            # A process that left the group (setsid) may hold the pipes open: read on, but bounded.
            readers.cancel_scope.deadline = anyio.current_time() + _DRAIN_S
        return _Outcome(process.returncode, deadline.cancelled_caught, stdout, stderr)


def build_server(
    root: Path,
    *,
    launcher: CommandLauncher | None = None,
    default_timeout_s: float = 120,
    max_timeout_s: float = 1800,
) -> MCPServer:
    """A ``shell`` server whose commands run in ``root``, started by ``launcher``."""
    chosen: CommandLauncher = launcher or PlainLauncher()
    server = new_server("shell", "Run shell commands in the project root.")

    async def run(command: str, timeout_s: float | None = None) -> str:
        timeout = default_timeout_s if timeout_s is None else timeout_s
        if not 0 < timeout <= max_timeout_s:
            raise ToolError(f"timeout_s must be above 0 and at most {max_timeout_s:g}, not {timeout:g}")
        argv = chosen.argv(command, root)
        outcome = await _execute(argv, root, chosen.environment(os.environ), timeout)
        return outcome.report(timeout)

    server.add_tool(
        run,
        name="run",
        description=(
            "Run a command with `bash -c` in the project root; stdin is empty and credentials are"
            " not in the environment. Returns the exit code, then stdout and stderr, each capped at"
            f" {OUTPUT_LIMIT // 1024} KiB (head and tail kept). timeout_s defaults to"
            f" {default_timeout_s:g}, at most {max_timeout_s:g}; on timeout the whole process group"
            " is killed, and background processes are killed when the command exits."
        ),
        structured_output=False,
    )
    return server


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m dispatch.servers.shell --root DIR``: serve the shell tools over stdio."""
    parser = argparse.ArgumentParser(prog="python -m dispatch.servers.shell", description=__doc__)
    root_argument(parser)
    parser.add_argument("--default-timeout", type=float, default=120, help="seconds (default 120)")
    parser.add_argument("--max-timeout", type=float, default=1800, help="seconds (default 1800)")
    args = parser.parse_args(argv)
    root = existing_root(parser, args.root)
    serve_stdio(build_server(root, default_timeout_s=args.default_timeout, max_timeout_s=args.max_timeout))


if __name__ == "__main__":
    main()
