"""Denial → prompt → re-run, the shell's side: turn what a sandboxed command was refused (or what
the model asks for up front with ``needs``) into approvals, and approvals into a wider sandbox.

Every request goes through ``ask`` (the agent's ``HubLink.request_access``, bound to the agent by
the hub), so the hub decides by the agent's identity; here only the always-denied set is known
too, to say so without asking. Grants the user gives for the session widen this shell's sandbox
for the commands that follow; a grant given ``once`` widens only the re-run it was asked for.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from dispatch.servers.hublink import AccessDecision, Operation

from .denials import Need, find_needs
from .launcher import Grant, SandboxLauncher
from .policy import NETWORK

__all__ = ["Ask", "Widener"]

Ask = Callable[[str, Operation, str], Awaitable[AccessDecision]]
MAX_RERUNS = 3


class Widener:
    """One shell server's sandbox and the grants it has been given this session."""

    def __init__(self, launcher: SandboxLauncher, ask: Ask | None) -> None:
        self.launcher = launcher
        self._ask = ask

    def _target(self, path: str) -> str:
        if path.strip().lower() == NETWORK:
            return NETWORK
        if path == "~" or path.startswith("~/"):
            path = str(self.launcher.denied.home) + path[1:]
        return os.path.normpath(self.launcher.root / path)

    def _covered(self, need: Need) -> bool:
        if need.path == NETWORK:
            return self.launcher.network
        path = Path(need.path)
        if need.op == "write":
            return self.launcher.writable(path)
        return self.launcher.visible(path)

    async def request(
        self, needs: Sequence[Need], why: str, current: SandboxLauncher
    ) -> tuple[SandboxLauncher, list[str]]:
        """Ask for each need ``current`` lacks; returns the widened launcher and a note per need."""
        notes: list[str] = []
        granted: list[Grant] = []
        for raw in needs:
            need = Need(self._target(raw.path), raw.op)
            grant = Grant(need.path, need.op)
            if self._covered(need) or grant in current.grants:
                continue
            denied = _always_denied(need, current)
            if denied is not None:
                notes.append(f"{grant.describe()} refused without asking: {denied}")
                continue
            if self._ask is None:
                notes.append(f"{grant.describe()} not granted: this shell server has no one to ask for approval")
                continue
            decision = await self._ask(need.path, need.op, why)
            if not decision.granted:
                reason = f": {decision.reason}" if decision.reason else ""
                notes.append(f"{grant.describe()} was not granted{reason}")
                continue
            granted.append(grant)
            notes.append(f"{grant.describe()} granted ({decision.remember or 'once'})")
            if decision.remember in ("session", "always"):
                self.launcher = self.launcher.widened([grant])
        return current.widened(granted), notes

    def needs_in(self, output: str, current: SandboxLauncher) -> list[Need]:
        """What the output of a command run by ``current`` shows it was refused."""
        return find_needs(output, current.root, current.denied.home, current.writable, current.visible)


def _always_denied(need: Need, launcher: SandboxLauncher) -> str | None:
    if need.path == NETWORK:
        return None
    return launcher.denied.reason(Path(os.path.realpath(need.path)), need.op)
