"""Streamed answers, coalesced: the parts of an answer are handed on at most every
:data:`DELTA_INTERVAL_S` (about 20 times a second per call), however fast they arrive, so a fast
model's hundreds of tokens a second cost a listener twenty events, and the pipe from the model
worker twenty frames. The model worker and the in-process scripted model both stream through it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from dispatch.hub.llm.types import Delta

DELTA_INTERVAL_S = 0.05
"""The shortest time between two hand-overs of one call's parts."""


class Coalescer:
    """Collects an answer's parts and hands them to ``sink``, merged (adjacent parts of the same
    text or tool call become one), at most every ``interval_s``; what waits is handed on by a timer
    of the running asyncio loop, and :meth:`close` hands on the rest."""

    def __init__(self, sink: Callable[[list[Delta]], None], interval_s: float = DELTA_INTERVAL_S) -> None:
        self._sink = sink
        self._interval_s = interval_s
        self._parts: list[tuple[str | None, list[str]]] = []
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, text: str, tool: str | None = None) -> None:
        """One part: answer text (``tool`` None) or a piece of ``tool``'s call arguments."""
        if not text:
            return
        if self._parts and self._parts[-1][0] == tool:
            self._parts[-1][1].append(text)
        else:
            self._parts.append((tool, [text]))
        wait = self._last + self._interval_s - time.monotonic()
        if wait <= 0:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self.flush)

    def flush(self) -> None:
        """Hand on what waits now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._parts:
            return
        parts, self._parts = self._parts, []
        self._last = time.monotonic()
        self._sink([Delta(text="".join(pieces), tool=tool) for tool, pieces in parts])

    def close(self) -> None:
        """Hand on the rest; nothing more comes."""
        self.flush()

    def discard(self) -> None:
        """Forget what waits (the call failed); nothing more comes."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._parts = []
