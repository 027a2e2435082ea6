"""How large a model's context window is, and how many tokens a request takes: what an agent needs
to know to compact its transcript before a provider refuses it.

A model's window comes from the config (``context_window`` on a model of ``models.keys[].models``),
else from litellm's model info, else it is unknown (None). For a tag, any of its candidates may
answer, so its window is the smallest one known among them. litellm's model info is asked of the
model worker (litellm never loads in the hub's process) once per model and kept.

Tokens are counted by litellm's counter, in the worker too. A meter without the worker (a hub
given its own model client, such as the in-process scripted model) knows only the configured
windows and estimates tokens at four characters each (:func:`estimate_tokens`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from dispatch.hub.errors import UserError
from dispatch.hub.llm.images import for_estimate
from dispatch.hub.llm.model_loop import model_loop
from dispatch.hub.llm.model_process import MeasureRequest, model_process
from dispatch.hub.llm.models_config import ModelsConfig
from dispatch.hub.llm.resolve import Candidate, resolve
from dispatch.hub.llm.types import JsonDict

__all__ = ["ContextMeter", "estimate_tokens"]


def estimate_tokens(messages: Sequence[JsonDict], tools: Sequence[JsonDict] = ()) -> int:
    """About four characters a token, of the request as JSON: a rough count needing no tokenizer (an
    image counted as :data:`~dispatch.hub.llm.images.IMAGE_TOKENS`, not by its data)."""
    sized = for_estimate(messages)
    return (len(json.dumps(sized, default=str)) + (len(json.dumps(list(tools))) if tools else 0)) // 4


class ContextMeter:
    """Windows and token counts for the models of one ``models`` config section."""

    def __init__(self, config: ModelsConfig, *, worker: bool = True) -> None:
        self._config = config
        self._worker = worker
        self._litellm_windows: dict[str, int | None] = {}
        """litellm's window of each litellm model name asked so far (None: litellm does not know it)."""

    @property
    def config(self) -> ModelsConfig:
        return self._config

    def use(self, config: ModelsConfig) -> None:
        """Use an edited ``models`` section from now on."""
        self._config = config

    def _candidates(self, model: str) -> list[Candidate]:
        try:
            return resolve(self._config, model)
        except UserError:  # a tag no model has: the call itself says so
            return []

    async def window(self, model: str) -> int | None:
        """The context window of a tag or model name, in tokens; None when unknown."""
        known: list[int] = []
        for candidate in self._candidates(model):
            configured = candidate.entry.context_window if candidate.entry is not None else None
            found = configured if configured is not None else await self._litellm_window(candidate.litellm_model)
            if found is not None:
                known.append(found)
        return min(known) if known else None

    async def _litellm_window(self, litellm_model: str) -> int | None:
        if not self._worker:
            return None
        if litellm_model not in self._litellm_windows:
            measured = await model_loop().run(lambda: model_process().measure(MeasureRequest(model=litellm_model)))
            self._litellm_windows[litellm_model] = measured.window
        return self._litellm_windows[litellm_model]

    async def count(self, model: str, messages: Sequence[JsonDict], tools: Sequence[JsonDict] = ()) -> int:
        """The tokens of a request to ``model``: litellm's counter (for its first candidate), else
        the estimate."""
        candidates = self._candidates(model)
        if self._worker and candidates:
            request = MeasureRequest(model=candidates[0].litellm_model, messages=list(messages), tools=list(tools))
            measured = await model_loop().run(lambda: model_process().measure(request))
            self._litellm_windows.setdefault(request.model, measured.window)
            if measured.tokens is not None:
                return measured.tokens
        return estimate_tokens(messages, tools)
