"""What a model call costs: a model's per-token :class:`Prices` and the arithmetic over a call's
:class:`~dispatch.hub.llm.types.Usage`, the same as litellm's for a text call.

Prices are looked up once per model, never per call: the configured ones of a model entry
(:meth:`~dispatch.hub.llm.models_config.ModelEntry.prices`, applied by the key router), else
litellm's own for the model (:func:`~dispatch.hub.llm.litellm_call.litellm_prices`, read from its
cost map in the model worker). A call then costs

    uncached prompt tokens x input + cache reads x cache_read + cache writes x cache_write
    + completion tokens x output

with a cache price that is not known taken as the input price, as litellm does (a provider that
publishes no cache price bills cached tokens as ordinary input). Anthropic's own prices put a
cache write at 1.25x and a cache read at 0.1x the input price; OpenAI's reads at 0.5x and has no
writes. litellm's tiers (prices above 200k prompt tokens, service tiers) are not applied.
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatch.hub.llm.types import Usage

PER_MTOK = 1e6
"""Tokens in the unit config prices are given in (US dollars per million tokens)."""


@dataclass(frozen=True)
class Prices:
    """A model's prices in US dollars per token; a cache price of None is the input price."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None

    def cost_usd(self, usage: Usage) -> float:
        """What ``usage`` costs at these prices."""
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        return (
            usage.uncached_prompt_tokens * self.input
            + usage.cache_read_tokens * read
            + usage.cache_write_tokens * write
            + usage.completion_tokens * self.output
        )
