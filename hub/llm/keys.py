"""Key availability: provider marks (quota, rate limit, refused) and budget windows.

A key is unavailable while it carries a mark from a provider error, or while its spend in the
current budget window (from the usage ledger) has reached its budget. Each unavailable key is
described by a :class:`Blocked`: why, until when (if known), and when it is worth trying again.
A key whose reset is unknown (an ``insufficient_quota`` answer, a rate limit without headers) is
tried again every ``probe_interval``; a refused key (401/403) and a spent ``total`` budget only
come back when the config changes.

Budget windows are UTC: a day starts at midnight UTC, a month on the first at midnight UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from dispatch.hub.llm.clock import Clock
from dispatch.hub.llm.failures import Failure, FailureKind

Window = Literal["day", "month", "total"]


def window_bounds(window: Window, now: float) -> tuple[float, float | None]:
    """The start of the budget window holding ``now`` and its end (None: it never ends)."""
    if window == "total":
        return 0.0, None
    moment = datetime.fromtimestamp(now, UTC)
    if window == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    else:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
    return start.timestamp(), end.timestamp()


@dataclass(frozen=True)
class Blocked:
    """Why one key cannot be used now."""

    key: str
    why: str
    until: float | None
    """When it resets, if known (POSIX seconds)."""
    retry_at: float | None
    """When it is worth trying again: the reset, or the next probe; None: not before the config changes."""


@dataclass
class _Mark:
    failure: Failure
    probe_at: float


class KeyStates:
    """The marks provider errors left on keys, by key name."""

    def __init__(self, clock: Clock, probe_interval: float) -> None:
        self._clock = clock
        self.probe_interval = probe_interval
        self._marks: dict[str, _Mark] = {}

    def mark(self, key: str, failure: Failure) -> Blocked:
        """Record an exhausting failure on ``key``; returns how the key is blocked now."""
        self._marks[key] = _Mark(failure, self._clock.now() + self.probe_interval)
        blocked = self.blocked(key)
        assert blocked is not None
        return blocked

    def clear(self, key: str) -> None:
        """A call on ``key`` succeeded: whatever was marked is over."""
        self._marks.pop(key, None)

    def clear_environment(self) -> None:
        """Forget the marks of keys read from litellm's environment (``env:PROVIDER``)."""
        for key in [k for k in self._marks if k.startswith("env:")]:
            del self._marks[key]

    def blocked(self, key: str) -> Blocked | None:
        """How ``key`` is blocked by a provider mark, or None when it may be tried."""
        mark = self._marks.get(key)
        if mark is None:
            return None
        failure, now = mark.failure, self._clock.now()
        if failure.kind is FailureKind.auth:
            return Blocked(key, f"refused the key ({failure.detail})", None, None)
        if failure.reset_at is not None:
            if now >= failure.reset_at:
                return None
            return Blocked(key, failure.kind.value.replace("_", " "), failure.reset_at, failure.reset_at)
        if now >= mark.probe_at:
            return None  # time to probe it again
        return Blocked(key, f"{failure.kind.value.replace('_', ' ')}, reset unknown", None, mark.probe_at)


def budget_block(key: str, budget: str, window: Window, amount: float, spent: float, now: float) -> Blocked | None:
    """How a key is blocked by its budget, given what it spent in the current window."""
    if spent < amount:
        return None
    _, end = window_bounds(window, now)
    return Blocked(key, f"budget {budget} reached (${spent:.4g} spent)", end, end)


def describe_wait(blocked: list[Blocked], now: float, probe_interval: float) -> str:
    """The reason shown while an agent waits: ``waiting for key until 14:00 (openai-1: rate limit)``."""
    known = [b.until for b in blocked if b.until is not None and b.retry_at is not None]
    keys = "; ".join(f"{b.key}: {b.why}" for b in blocked)
    if known:
        at = datetime.fromtimestamp(min(known)).astimezone()
        today = datetime.fromtimestamp(now).astimezone().date()
        shown = at.strftime("%H:%M") if at.date() == today else at.strftime("%b %d %H:%M")
        return f"waiting for key until {shown} ({keys})"
    return f"waiting for key, reset unknown: trying again every {probe_interval:g}s ({keys})"
