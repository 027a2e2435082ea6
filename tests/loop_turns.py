"""Counting the turns of the event loop: a task that yields on every turn, for tests that check a
piece of work does not hold the loop (or hands it on without a turn per item)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel


class LoopTurns:
    """How many turns of the loop have passed since :func:`counting_turns` began."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        while True:
            self.count += 1
            await anyio.lowlevel.checkpoint()


@asynccontextmanager
async def counting_turns() -> AsyncIterator[LoopTurns]:
    """A task counting the loop's turns while the body runs (it has run once when the body starts)."""
    turns = LoopTurns()
    async with anyio.create_task_group() as group:
        group.start_soon(turns.run)
        await anyio.lowlevel.checkpoint()
        yield turns
        group.cancel_scope.cancel()
