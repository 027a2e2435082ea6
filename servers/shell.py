"""The ``shell`` tool server: one tool, ``run``, for agents whose grants include the shell.

Its room in the house: the hub mounts it for one agent through :func:`build_server` (in-process),
and ``python -m dispatch.servers.shell --root DIR`` serves the same code over stdio. A command runs
with ``bash -c`` in the project root, in its own process group, with an environment stripped of
credentials; on timeout, and after the command exits, whatever is left of the group is killed. At
most ``max_commands`` commands of one server (one agent) run at once; more wait their turn.
stdout and stderr are each capped while they stream (head and tail kept, the cut counted). While
the command runs, what it prints is also sent as it comes, as MCP progress notifications whose
message is the output since the previous one (at most one every :data:`RELAY_INTERVAL_S`, the
first :data:`OUTPUT_LIMIT` bytes of each stream), when the caller asked for progress.

How a command is started is the :class:`CommandLauncher` seam: :class:`PlainLauncher` (no sandbox;
``sandbox: off``, with every command approved first) or the OS sandbox,
:class:`~dispatch.servers.sandbox.SandboxLauncher` (bubblewrap + Landlock), which the hub picks
with :func:`~dispatch.servers.sandbox.choose_shell_mode`. In the sandbox, a command refused a path
or the network raises an approval through ``ask`` and, once granted, runs again in a sandbox
widened by exactly that grant (:mod:`dispatch.servers.sandbox.asking`). Output is made terminal-safe
and binary output is summarised.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread
from anyio.abc import ByteReceiveStream
from mcp.server.mcpserver import Context
from pydantic import BaseModel, Field

from ._base import (
    ServerPlan,
    ToolError,
    ToolList,
    builds,
    existing_root,
    root_argument,
    serve_stdio,
)
from .hublink import Operation
from .sandbox.asking import MAX_RERUNS, Ask, Widener
from .sandbox.choice import choose_shell_mode
from .sandbox.denials import Need
from .sandbox.launcher import SandboxLauncher
from .sandbox.output import is_binary, summarise_binary, terminal_safe
from .sandbox.pids import ProcessLimits
from .sandbox.policy import command_target, scrub_environment

__all__ = ["CommandLauncher", "PlainLauncher", "build_server", "main"]

OUTPUT_LIMIT = 64 * 1024
"""Bytes kept of each stream: the first half and the last half of what the command wrote."""
_GRACE_S = 1.0  # SIGTERM -> SIGKILL
_DRAIN_S = 1.0  # how long to keep reading pipes that an escaped process still holds open
_POLL_S = 0.05
RELAY_INTERVAL_S = 0.1
"""The shortest time between two progress notifications of a running command's output."""

Output = Callable[[str], Awaitable[None]]
"""Where a running command's output goes as it comes (the caller's progress notifications)."""


class _Relay:
    """A running command's output, sent on as it comes: decoded, terminal-safe, at most every
    :data:`RELAY_INTERVAL_S` and at most ``limit`` bytes of each stream (the result keeps the rest)."""

    def __init__(self, send: Output, limit: int = OUTPUT_LIMIT) -> None:
        self._send = send
        self._limit = limit
        self._sent: dict[str, int] = {}
        self._decoders: dict[str, codecs.IncrementalDecoder] = {}
        self._waiting: list[str] = []

    def feed(self, name: str, chunk: bytes) -> None:
        sent = self._sent.get(name, 0)
        if sent >= self._limit:
            return
        room = chunk[: self._limit - sent]
        self._sent[name] = sent + len(room)
        decoder = self._decoders.setdefault(name, codecs.getincrementaldecoder("utf-8")(errors="replace"))
        self._waiting.append(decoder.decode(room))
        if self._sent[name] >= self._limit:
            self._waiting.append(f"\n[... more {name}: the result keeps its head and tail ...]\n")

    async def flush(self) -> None:
        text, self._waiting = "".join(self._waiting), []
        if text and not is_binary(text.encode()):
            await self._send(terminal_safe(text))

    async def pump(self) -> None:
        """Send what came, every :data:`RELAY_INTERVAL_S`, until cancelled."""
        while True:
            await anyio.sleep(RELAY_INTERVAL_S)
            with anyio.CancelScope(shield=True):  # a notification is sent whole
                await self.flush()


MAX_COMMANDS = 4
"""Commands of one agent running at once, by default; more wait their turn."""


class CommandLauncher(Protocol):
    """How a command becomes a process: its argv and its environment."""

    def argv(self, command: str, root: Path) -> list[str]:
        """The argv that runs ``command`` with ``root`` as the working directory."""
        ...

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment the process gets, given the server's own."""
        ...


class PlainLauncher:
    """No sandbox: ``bash -c COMMAND`` with the environment scrubbed like the sandbox's."""

    def argv(self, command: str, root: Path) -> list[str]:
        return ["bash", "-c", command]

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        return scrub_environment(base)


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

    async def drain(self, stream: ByteReceiveStream | None, relay: _Relay | None = None, name: str = "") -> None:
        if stream is not None:
            async for chunk in stream:
                self.add(chunk)
                if relay is not None:
                    relay.feed(name, chunk)

    def text(self, name: str) -> str:
        """What the model sees: terminal-safe text, the cut counted, or a binary summary."""
        kept = bytes(self.head + self.tail)
        if is_binary(kept):
            return summarise_binary(kept, self.total)
        cut = self.total - len(self.head) - len(self.tail)
        if cut == 0:
            return terminal_safe(kept.decode(errors="replace"))
        head, tail = (terminal_safe(part.decode(errors="replace")) for part in (self.head, self.tail))
        return f"{head}\n[... {cut:,} bytes of {name} cut; {self.total:,} bytes in all ...]\n{tail}"


@dataclass(frozen=True)
class _Outcome:
    returncode: int | None
    timed_out: bool
    stdout: _Capture
    stderr: _Capture
    notes: list[str] = field(default_factory=list[str])
    """What the sandbox did after the command (removed an always-denied path it created)."""

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

    def plain_text(self) -> str:
        """stdout and stderr as kept, decoded, for reading what the sandbox refused."""
        return "\n".join(bytes(c.head + c.tail).decode(errors="replace") for c in (self.stderr, self.stdout))


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


async def _execute(
    argv: Sequence[str], root: Path, env: Mapping[str, str], timeout_s: float, output: Output | None = None
) -> _Outcome:
    stdout, stderr = _Capture(OUTPUT_LIMIT), _Capture(OUTPUT_LIMIT)
    relay = _Relay(output) if output is not None else None
    deadline = anyio.move_on_after(timeout_s)
    async with await anyio.open_process(
        argv, cwd=root, env=env, stdin=subprocess.DEVNULL, start_new_session=True
    ) as process:
        async with anyio.create_task_group() as relaying:
            if relay is not None:
                relaying.start_soon(relay.pump)
            async with anyio.create_task_group() as readers:
                readers.start_soon(stdout.drain, process.stdout, relay, "stdout")
                readers.start_soon(stderr.drain, process.stderr, relay, "stderr")
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
            relaying.cancel_scope.cancel()
        if relay is not None:
            await relay.flush()  # the last of it, before the result
        return _Outcome(process.returncode, deadline.cancelled_caught, stdout, stderr)


class NeedArg(BaseModel):
    """Something a command will need beyond the sandbox, asked for before it runs."""

    path: str = Field(description="an absolute path (or ~/...), or 'network' for network access")
    op: Operation = Field(default="read", description="read, write or execute (use execute for 'network')")


def plan_server(
    root: Path,
    *,
    launcher: CommandLauncher | None = None,
    ask: Ask | None = None,
    confirm_each: bool = False,
    refusal: str | None = None,
    default_timeout_s: float = 120,
    max_timeout_s: float = 1800,
    max_commands: int = MAX_COMMANDS,
) -> ServerPlan:
    """A ``shell`` server whose commands run in ``root``, started by ``launcher`` (no sandbox
    when None: the hub always passes one, see :func:`dispatch.servers.sandbox.choose_shell_mode`).

    ``ask`` requests access from the hub (the agent's ``request_access``): what a sandboxed
    command was refused, and with ``confirm_each`` every command (``sandbox: off``). ``refusal``
    disables the tool, saying why. ``max_commands``: commands running at once (one agent's: the
    hub builds a server per agent); more wait for one to end, their timeout not yet running.
    """
    chosen: CommandLauncher = launcher or PlainLauncher()
    widener = Widener(chosen, ask) if isinstance(chosen, SandboxLauncher) else None
    turns = anyio.CapacityLimiter(max_commands)

    async def execute(current: CommandLauncher, command: str, limit_s: float, output: Output | None) -> _Outcome:
        sandboxed = current if isinstance(current, SandboxLauncher) else None
        before = sandboxed.denied_present() if sandboxed is not None else None
        guard = sandboxed.guard(before) if sandboxed is not None else None
        argv = current.argv(command, root) if sandboxed is None else sandboxed.argv(command, root, before)
        limits: list[str] = []
        notes: list[str] = []
        try:
            outcome = await _execute(argv, root, current.environment(os.environ), limit_s, output)
        finally:
            if isinstance(current, SandboxLauncher):
                with anyio.CancelScope(shield=True):
                    limits = await anyio.to_thread.run_sync(current.release, argv)
            if guard is not None:  # the always-denied paths as they were before the command
                with anyio.CancelScope(shield=True):
                    notes = await anyio.to_thread.run_sync(guard.restore)
        outcome.notes.extend(limits)
        outcome.notes.extend(notes)
        if sandboxed is not None and before is not None:  # and none new anywhere in the project
            guarded = () if guard is None else guard.paths.keys()
            outcome.notes.extend(sandboxed.remove_new_denied(before, guarded))
        return outcome

    async def run(
        command: str, ctx: Context, timeout_s: float | None = None, needs: list[NeedArg] | None = None
    ) -> str:
        if refusal is not None:
            raise ToolError(refusal)
        timeout = default_timeout_s if timeout_s is None else timeout_s
        if not 0 < timeout <= max_timeout_s:
            raise ToolError(f"timeout_s must be above 0 and at most {max_timeout_s:g}, not {timeout:g}")
        if confirm_each:
            await _confirm(ask, command)
        sent = 0

        async def output(text: str) -> None:
            nonlocal sent
            sent += len(text)
            await ctx.report_progress(sent, None, text)

        async def relayed(current: CommandLauncher, command: str, limit_s: float) -> _Outcome:
            return await execute(current, command, limit_s, output)

        async with turns:
            if widener is None:
                return (await relayed(chosen, command, timeout)).report(timeout)
            return await _run_widening(widener, relayed, command, timeout, needs or [])

    listed = ToolList()
    listed.add(
        run,
        name="run",
        description=(
            "Run a command with `bash -c` in the project root; stdin is empty and credentials are"
            " not in the environment. Returns the exit code, then stdout and stderr, each capped at"
            f" {OUTPUT_LIMIT // 1024} KiB (head and tail kept; escape sequences stripped, binary"
            f" output summarised). timeout_s defaults to {default_timeout_s:g}, at most"
            f" {max_timeout_s:g}; on timeout the whole process tree is killed, and background"
            f" processes are killed when the command exits. At most {max_commands} commands run at once;"
            " more wait their turn. In the sandbox, a command refused a path"
            " or the network asks the user and re-runs once approved; `needs` asks before the first"
            ' run, e.g. [{"path": "/data/in", "op": "read"}, {"path": "network", "op": "execute"}].'
        ),
    )
    return ServerPlan("shell", "Run shell commands in the project root.", listed)


build_server = builds(plan_server)


async def _confirm(ask: Ask | None, command: str) -> None:
    """``sandbox: off``: the user approves each command before it runs, or it does not run."""
    if ask is None:
        raise ToolError("not run: with the sandbox off every command needs approval, and nobody can be asked here")
    decision = await ask(command_target(command), "execute", "run this command without a sandbox")
    if not decision.granted:
        raise ToolError(f"not run: the command was not approved{': ' + decision.reason if decision.reason else ''}")


Execute = Callable[[CommandLauncher, str, float], Awaitable[_Outcome]]


async def _run_widening(widener: Widener, execute: Execute, command: str, limit_s: float, needs: list[NeedArg]) -> str:
    """Run in the sandbox; while the output shows a refusal the user then approves, run again in
    a sandbox widened by exactly those grants (at most MAX_RERUNS times). Never unsandboxed."""
    current, notes = await widener.request(
        [Need(n.path, n.op) for n in needs], f"asked for before running: {command}", widener.launcher
    )
    outcome = await execute(current, command, limit_s)
    notes += outcome.notes
    for _ in range(MAX_RERUNS):
        found = [] if outcome.timed_out else widener.needs_in(outcome.plain_text(), current)
        if not found:
            break
        wider, more = await widener.request(found, f"the sandbox refused it while running: {command}", current)
        notes += more
        if wider is current:
            break
        notes.append("re-ran the command in the widened sandbox")
        current = wider
        outcome = await execute(current, command, limit_s)
        notes += outcome.notes
    return outcome.report(limit_s) + "".join(f"\n[sandbox: {note}]" for note in notes)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m dispatch.servers.shell --root DIR [--write PATH ...] [--sandbox auto|landlock|off]``:
    serve the shell tools over stdio. Standalone there is no one to approve anything: refused
    paths stay refused, and ``--sandbox off`` refuses every command."""
    parser = argparse.ArgumentParser(prog="python -m dispatch.servers.shell", description=__doc__)
    root_argument(parser)
    parser.add_argument("--default-timeout", type=float, default=120, help="seconds (default 120)")
    parser.add_argument("--max-timeout", type=float, default=1800, help="seconds (default 1800)")
    parser.add_argument("--sandbox", choices=["auto", "landlock", "off"], default="auto", help="default: auto")
    limits = ProcessLimits()
    parser.add_argument(
        "--max-commands", type=int, default=MAX_COMMANDS, help=f"commands at once (default {MAX_COMMANDS})"
    )
    parser.add_argument(
        "--processes",
        type=int,
        nargs=3,
        metavar=("TOTAL", "AGENT", "COMMAND"),
        default=[limits.total, limits.agent, limits.command],
        help=f"process limits (default {limits.total} {limits.agent} {limits.command})",
    )
    parser.add_argument("--pids-parent", type=Path, help="the pids cgroup to nest this server's in")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--write", type=Path, nargs="+", action="extend", help="writable paths (default: the root)")
    scope.add_argument("--read-only", action="store_true", help="commands may write nowhere in the root")
    parser.add_argument(
        "--read", type=Path, nargs="+", action="extend", help="the only paths of the root they see besides the writable"
    )
    args = parser.parse_args(argv)
    root = existing_root(parser, args.root)
    write = [] if args.read_only else [root / p for p in args.write or [root]]
    read = None if args.read is None else [root / p for p in args.read]
    mode = choose_shell_mode(
        root, write, args.sandbox, limits=ProcessLimits(*args.processes), pids_parent=args.pids_parent, read=read
    )
    server = build_server(
        root,
        launcher=mode.sandbox,
        confirm_each=mode.confirm_each,
        refusal=mode.refusal,
        default_timeout_s=args.default_timeout,
        max_timeout_s=args.max_timeout,
        max_commands=args.max_commands,
    )
    serve_stdio(server)


if __name__ == "__main__":
    main()
