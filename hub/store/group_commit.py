"""Group commit: many callers' writes in one transaction, each caller returning once its own write
is committed.

A burst of writes (hundreds of agents finishing a model call at once, each adding its row to the
usage ledger) would otherwise queue one transaction and one commit per row behind the store's
lock, and everything else that needs the store (the event journal, the API's reads)
would queue behind them. Here the first caller to get the turn writes every row queued by then;
the callers whose rows it wrote find them done when their turn comes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar, cast

import anyio

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class _Slot(Generic[_Item, _Result]):
    def __init__(self, item: _Item) -> None:
        self.item = item
        self.done = False
        self.result: _Result | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[_Item, _Result]):
    """``await add(item)`` queues ``item`` and returns its result once ``write`` committed it.

    ``write(items)`` commits a batch in one transaction and returns one result per item, in order;
    if it raises, every caller of that batch gets the error.
    """

    def __init__(self, write: Callable[[Sequence[_Item]], Awaitable[Sequence[_Result]]]) -> None:
        self._write = write
        self._queued: list[_Slot[_Item, _Result]] = []
        self._turn = anyio.Lock()  # not fast_acquire: its turn of the loop lets a burst's callers queue their rows
        self.batches = 0

    async def add(self, item: _Item) -> _Result:
        slot: _Slot[_Item, _Result] = _Slot(item)
        self._queued.append(slot)
        async with self._turn:
            if not slot.done:
                batch, self._queued = self._queued, []
                await self._commit(batch)
        if slot.error is not None:
            raise slot.error
        return cast(_Result, slot.result)  # set with done

    async def _commit(self, batch: list[_Slot[_Item, _Result]]) -> None:
        results: Sequence[_Result] = ()
        try:
            with anyio.CancelScope(shield=True):  # the batch holds other callers' rows: write it whole
                results = await self._write([slot.item for slot in batch])
        except Exception as error:
            for slot in batch:
                slot.done, slot.error = True, error
            raise
        self.batches += 1
        for slot, result in zip(batch, results, strict=True):
            slot.done, slot.result = True, result
