"""The usage ledger as the model path sees it: one row per model call, and what a key has cost.

The key router writes and reads it through :class:`Ledger`; the hub's store
(:class:`~dispatch.hub.store.db.Store`) implements it, so this room never imports the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from dispatch.hub.llm.types import Usage


@dataclass(frozen=True)
class UsageRow:
    """One model call (or failed attempt) for the ledger."""

    at: float
    agent_id: str | None
    key: str
    provider: str
    model: str
    requested: str
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    outcome: str = "ok"
    error: str | None = None
    cache_read_tokens: int = 0
    """Of ``tokens_in``: read from the provider's prompt cache (:class:`~dispatch.hub.llm.types.Usage`)."""
    cache_write_tokens: int = 0
    """Of ``tokens_in``: written to the provider's prompt cache."""


def usage_columns(usage: Usage) -> dict[str, Any]:
    """Tokens and cost under the names the ledger's rows, the events' ``spent`` and the usage views
    all use (one mapping from :class:`~dispatch.hub.llm.types.Usage`)."""
    return {
        "tokens_in": usage.prompt_tokens,
        "tokens_out": usage.completion_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cost_usd": usage.cost_usd,
    }


class Ledger(Protocol):
    """Where model calls are recorded and spending is read."""

    async def record_usage(self, row: UsageRow) -> None:
        """Append one call (committed by the time what the call returned is announced)."""
        ...

    async def spend(self, key: str, since: float = 0.0) -> float:
        """What ``key`` has cost since ``since`` (POSIX seconds)."""
        ...
