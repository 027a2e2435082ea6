"""Wall-clock time for budget windows, key resets and waits, injectable so tests need not sleep.

The router and the wait state read time only through a :class:`Clock`: :class:`SystemClock` in
the hub, :class:`ManualClock` in tests (time moves only when the test advances it, and sleepers
wake then). Times are POSIX seconds (UTC).
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio


class Clock(Protocol):
    """Now, and sleeping until a moment."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep_until(self, moment: float) -> None:
        """Return once :meth:`now` has reached ``moment`` (at once if it has already)."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, moment: float) -> None:
        await anyio.sleep(max(0.0, moment - time.time()))


class ManualClock:
    """A clock that moves only when told to: :meth:`advance` or :meth:`set` wake due sleepers."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._moved = anyio.Event()
        self.sleepers = 0
        """How many tasks sleep on this clock right now (tests wait for a waiter to settle)."""

    def now(self) -> float:
        return self._now

    def set(self, moment: float) -> None:
        self._now = moment
        self._moved.set()
        self._moved = anyio.Event()

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    async def sleep_until(self, moment: float) -> None:
        self.sleepers += 1
        try:
            while self._now < moment:
                await self._moved.wait()
        finally:
            self.sleepers -= 1
