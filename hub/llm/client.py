"""One model call, through litellm: the seam every agent's LLM request goes through.

Agents hold a :class:`ModelClient`. :func:`call_litellm` makes one ``litellm.acompletion`` call
(retries off); :func:`model_error` turns litellm's exceptions into Dispatch's. The plain
:class:`LiteLLMClient` calls with the agent's litellm model name, so litellm's usual environment
(``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ...) is honoured; the key router
(:mod:`dispatch.hub.llm.router`) adds tags, keys, budgets, fallback and the usage ledger. litellm
is imported on first use, never at start-up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import cache
from types import ModuleType
from typing import Any, Protocol, cast

from pydantic import BaseModel, ConfigDict, Field

from dispatch.hub.errors import ModelCallError, UserError
from dispatch.hub.llm.model_loop import model_loop

JsonDict = dict[str, Any]


class ToolCallRequest(BaseModel):
    """One tool call the model asked for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str
    arguments: str = Field(description="the JSON text of the arguments, as the model wrote it")


class Usage(BaseModel):
    """Tokens and cost of model calls."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        self.calls += other.calls


class Completion(BaseModel):
    """The model's answer to one request."""

    model_config = ConfigDict(extra="forbid")

    text: str | None
    tool_calls: list[ToolCallRequest]
    usage: Usage
    model: str
    latency_s: float

    def assistant_message(self) -> JsonDict:
        """The answer as an OpenAI-format assistant message for the transcript."""
        message: JsonDict = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return message


class ModelClient(Protocol):
    """Anything that can answer a transcript with tools."""

    async def complete(
        self, model: str, messages: Sequence[JsonDict], tools: Sequence[JsonDict], *, agent_id: str | None = None
    ) -> Completion:
        """One model call for ``agent_id`` (who the usage ledger charges). ``model`` is a tag or a
        model name. Raises :class:`ModelCallError` (or :class:`UserError` for a bad model), or
        :class:`~dispatch.hub.errors.KeysExhausted` when every key the model may use is exhausted."""
        ...


@cache
def load_litellm() -> ModuleType:
    """Import litellm once, offline-safe: its cost map is read from the package, not the network."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def _usage_of(litellm: ModuleType, response: Any, model: str) -> Usage:
    usage = getattr(response, "usage", None)
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    hidden: Any = getattr(response, "_hidden_params", None)
    known: Any = cast(dict[str, Any], hidden).get("response_cost") if isinstance(hidden, dict) else None
    if known is not None:  # litellm priced it already while logging the call
        return Usage(prompt_tokens=prompt, completion_tokens=completion, cost_usd=float(known), calls=1)
    try:
        cost = float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:  # litellm raises for models missing from its cost map; prices come with keys
        cost = 0.0
    return Usage(prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost, calls=1)


def _connection_failed(litellm: ModuleType, error: BaseException) -> bool:
    """Whether the endpoint was never reached (litellm reports some of these as server errors)."""
    seen: BaseException | None = error
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ConnectionError | litellm.APIConnectionError) or type(seen).__name__ in (
            "APIConnectionError",
            "ConnectError",
            "ConnectTimeout",
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_unknown_model(litellm: ModuleType, error: BaseException) -> bool:
    """litellm could not tell which provider the model name belongs to."""
    return isinstance(error, litellm.BadRequestError) and "LLM Provider NOT provided" in str(error)


def is_unreachable(litellm: ModuleType, error: BaseException) -> bool:
    """The endpoint was never reached (a timeout is not this: it reached a slow endpoint)."""
    return not isinstance(error, litellm.Timeout) and _connection_failed(litellm, error)


def model_error(litellm: ModuleType, model: str, error: Exception) -> Exception:
    """A clear, traceback-free error for what went wrong with the call."""
    name = type(error).__name__
    detail = str(error).strip().splitlines()[0] if str(error).strip() else name
    if is_unknown_model(litellm, error):
        return UserError(f"unknown model {model!r}: give a litellm model name such as 'openai/gpt-4o-mini'")
    if is_unreachable(litellm, error):
        return ModelCallError(f"model {model!r}: the endpoint could not be reached ({detail})")
    if isinstance(error, litellm.AuthenticationError):
        return ModelCallError(f"model {model!r}: the endpoint refused the API key ({detail})")
    return ModelCallError(f"model {model!r}: {name}: {detail}")


async def call_litellm(
    model: str,
    messages: Sequence[JsonDict],
    tools: Sequence[JsonDict],
    *,
    timeout_s: float,
    api_key: str | None = None,
    api_base: str | None = None,
    extra: JsonDict | None = None,
) -> Completion:
    """One ``litellm.acompletion`` call with litellm's retries off, made by the model worker
    process (:mod:`dispatch.hub.llm.model_process`); a failure raises its
    :class:`~dispatch.hub.llm.model_process.RemoteCallError`, classified there."""
    from dispatch.hub.llm.model_process import CallRequest, model_process  # here: it imports this module

    request = CallRequest(
        id=0,
        model=model,
        messages=list(messages),
        tools=list(tools),
        timeout_s=timeout_s,
        api_key=api_key,
        api_base=api_base,
        extra=extra,
    )
    completion = await model_loop().run(lambda: model_process().call(request))
    return cast(Completion, completion)  # the same class, reached through the lazy import above


async def acompletion(
    litellm: ModuleType,
    model: str,
    messages: Sequence[JsonDict],
    tools: Sequence[JsonDict],
    timeout_s: float,
    api_key: str | None,
    api_base: str | None,
    extra: JsonDict | None,
) -> Completion:
    """The ``litellm.acompletion`` call itself (in the model worker)."""
    started = time.perf_counter()
    kwargs: JsonDict = {"model": model, "messages": list(messages), "num_retries": 0, "timeout": timeout_s}
    if tools:
        kwargs["tools"] = list(tools)
    if api_key is not None:
        kwargs["api_key"] = api_key
    if api_base is not None:
        kwargs["api_base"] = api_base
    kwargs.update(extra or {})
    response = await litellm.acompletion(**kwargs)
    choice: Any = response.choices[0].message
    raw_calls: list[Any] = list(choice.tool_calls or [])
    calls = [
        ToolCallRequest(id=str(c.id), name=str(c.function.name), arguments=str(c.function.arguments or "{}"))
        for c in raw_calls
    ]
    return Completion(
        text=choice.content,
        tool_calls=calls,
        usage=_usage_of(litellm, response, model),
        model=model,
        latency_s=time.perf_counter() - started,
    )


class LiteLLMClient:
    """Calls ``litellm.acompletion`` through litellm's environment, with no keys, ledger or fallback
    (the :class:`~dispatch.hub.llm.router.Router` adds those). Retries are off."""

    def __init__(self, *, timeout_s: float = 600.0, extra: JsonDict | None = None) -> None:
        self._timeout_s = timeout_s
        self._extra = dict(extra or {})

    async def complete(
        self, model: str, messages: Sequence[JsonDict], tools: Sequence[JsonDict], *, agent_id: str | None = None
    ) -> Completion:
        from dispatch.hub.llm.model_process import RemoteCallError  # here: it imports this module

        try:
            return await call_litellm(model, messages, tools, timeout_s=self._timeout_s, extra=self._extra)
        except RemoteCallError as error:  # every litellm failure becomes one of ours, with its cause kept
            raise error.dispatch_error() from error
