"""The shapes of one model call, shared by every room that calls a model or counts its cost: the
:class:`ModelClient` protocol agents hold, a :class:`Completion` with its :class:`Usage`, the
:class:`ToolCallRequest` s in it, the :class:`Delta` s of an answer as it streams, what is
:class:`Measured` of a model's context, and ``JsonDict``.
A leaf of the llm room: pydantic only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

JsonDict = dict[str, Any]
"""A JSON object as parsed: the hub's one name for it (llm is the lowest room that needs it)."""


class ToolCallRequest(BaseModel):
    """One tool call the model asked for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    arguments: str = Field(description="the JSON text of the arguments, as the model wrote it")


class Usage(BaseModel):
    """Tokens and cost of model calls.

    The one place the token counts are defined. ``prompt_tokens`` is every token of the prompt,
    cached or not, as OpenAI counts them and as litellm reports every provider (it adds
    Anthropic's ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` to its
    ``input_tokens``, which excludes them). ``cache_read_tokens`` and ``cache_write_tokens`` are
    the part of ``prompt_tokens`` read from and written to the provider's prompt cache, so the
    prompt tokens billed at the plain input price are ``uncached_prompt_tokens``.
    """

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0

    @property
    def uncached_prompt_tokens(self) -> int:
        """The prompt tokens neither read from nor written to the prompt cache."""
        return max(self.prompt_tokens - self.cache_read_tokens - self.cache_write_tokens, 0)

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.cost_usd += other.cost_usd
        self.calls += other.calls


class Measured(BaseModel):
    """What litellm knows of a model and a request: the model's input window (None: unknown) and
    the request's tokens by litellm's counter (None: not counted)."""

    model_config = ConfigDict(extra="forbid")

    window: int | None = None
    tokens: int | None = None


class Completion(BaseModel):
    """The model's answer to one request."""

    model_config = ConfigDict(extra="forbid")

    text: str | None
    tool_calls: list[ToolCallRequest]
    usage: Usage
    model: str
    latency_s: float
    answered_at: float = Field(default_factory=time.time)
    """When the answer came (epoch seconds): the call began ``latency_s`` before."""

    def assistant_message(self) -> JsonDict:
        """The answer as an OpenAI-format assistant message for the transcript."""
        message: JsonDict = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return message


class Delta(BaseModel):
    """Part of an answer as it streams in: text, or (``tool`` set) the arguments of that tool's call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    tool: str | None = None


DeltaSink = Callable[[Delta], None]
"""Called with each part of an answer as it arrives (coalesced: :mod:`dispatch.hub.llm.streaming`)."""


class ModelClient(Protocol):
    """Anything that can answer a transcript with tools."""

    async def complete(
        self,
        model: str,
        messages: Sequence[JsonDict],
        tools: Sequence[JsonDict],
        *,
        agent_id: str | None = None,
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        """One model call for ``agent_id`` (who the usage ledger charges). ``model`` is a tag or a
        model name. With ``on_delta`` the answer streams: its parts are handed to it as they arrive
        (a model that cannot stream answers at once, without any), and the completion is the same
        as without. Raises :class:`ModelCallError` (or :class:`UserError` for a bad model), or
        :class:`~dispatch.hub.errors.KeysExhausted` when every key the model may use is exhausted."""
        ...
