"""The usage ledger for a model client without keys: every call written down all the same.

The key router (:mod:`.router`) records each call against the key it used. A hub given another
client (the demo's scripted model, a test's, an embedder's own) would otherwise leave the ledger
empty, and with it ``GET /api/usage`` and the web UI's totals, while its agents show tokens.
:class:`RecordedCalls` wraps such a client and records each call, successful or not, under one
key name that says where the calls went.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from dispatch.hub.llm.failures import FailureKind
from dispatch.hub.llm.ledger import Ledger, UsageRow, usage_columns
from dispatch.hub.llm.types import Completion, DeltaSink, JsonDict, ModelClient

__all__ = ["RecordedCalls"]


class RecordedCalls:
    """``client``'s calls, each written to ``ledger`` under the key name ``key``."""

    def __init__(self, client: ModelClient, ledger: Ledger, key: str) -> None:
        self.client = client
        self._ledger = ledger
        self._key = key

    async def complete(
        self,
        model: str,
        messages: Sequence[JsonDict],
        tools: Sequence[JsonDict],
        *,
        agent_id: str | None = None,
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        started = time.perf_counter()
        provider = model.split("/", 1)[0] if "/" in model else self._key
        row = UsageRow(
            at=time.time(), agent_id=agent_id, key=self._key, provider=provider, model=model, requested=model
        )
        try:
            completion = await self.client.complete(model, messages, tools, agent_id=agent_id, on_delta=on_delta)
        except Exception as error:
            latency = time.perf_counter() - started
            await self._ledger.record_usage(
                replace(row, outcome=FailureKind.fatal.value, error=str(error)[:500], latency_s=latency)
            )
            raise
        done = replace(
            row, model=completion.model or model, latency_s=completion.latency_s, **usage_columns(completion.usage)
        )
        await self._ledger.record_usage(done)
        return completion
