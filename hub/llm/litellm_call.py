"""The litellm side of a model call: what runs in the model worker process
(:mod:`dispatch.hub.llm.model_worker`), never in the hub's.

litellm is imported on first use (:func:`load_litellm`, seconds and some 170 MiB); :func:`acompletion`
makes one ``litellm.acompletion`` call with litellm's retries off and reads the answer into a
:class:`~dispatch.hub.llm.types.Completion`; :func:`model_error` turns litellm's exceptions into
Dispatch's, and the predicates here tell :mod:`dispatch.hub.llm.failures` what kind they are.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from functools import cache
from types import ModuleType
from typing import Any, cast

from dispatch.hub.errors import ModelCallError, UserError
from dispatch.hub.llm.types import Completion, JsonDict, ToolCallRequest, Usage


@cache
def load_litellm() -> ModuleType:
    """Import litellm once, offline-safe: its cost map is read from the package, not the network."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    # Dispatch keeps no litellm logging callbacks: its logging payload need not copy each call's
    # messages (a walk of the whole transcript per call; bench.model_calls, bench/README.md)
    litellm.turn_off_message_logging = True
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


def _chain(error: BaseException, depth: int = 10) -> Iterator[BaseException]:
    """``error`` and what caused it, outermost first (at most ``depth`` of them)."""
    seen: BaseException | None = error
    for _ in range(depth):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _connection_failed(litellm: ModuleType, error: BaseException) -> bool:
    """Whether the endpoint was never reached (litellm reports some of these as server errors)."""
    return any(
        isinstance(seen, ConnectionError | litellm.APIConnectionError)
        or type(seen).__name__ in ("APIConnectionError", "ConnectError", "ConnectTimeout")
        for seen in _chain(error)
    )


def is_unknown_model(litellm: ModuleType, error: BaseException) -> bool:
    """litellm could not tell which provider the model name belongs to."""
    return isinstance(error, litellm.BadRequestError) and "LLM Provider NOT provided" in str(error)


def is_unreachable(litellm: ModuleType, error: BaseException) -> bool:
    """The endpoint was never reached (a timeout is not this: it reached a slow endpoint)."""
    return not isinstance(error, litellm.Timeout) and _connection_failed(litellm, error)


_CLASS_PREFIX = re.compile(r"^(?:[\w.]*?(?:Error|Exception|Exceptions?))\s*(?::|-)\s*")


def plain_detail(error: BaseException) -> str:
    """The first line of ``error``'s text without the chain of class names litellm puts before
    the provider's words (``litellm.AuthenticationError: AuthenticationError: OpenAIException - ``)."""
    text = str(error).strip().splitlines()[0].strip() if str(error).strip() else ""
    while (match := _CLASS_PREFIX.match(text)) is not None and match.end() < len(text):
        text = text[match.end() :]
    return text or "no detail given"


def url_tried(error: BaseException, api_base: str | None) -> str | None:
    """The endpoint the failed request went to: the configured base, else the URL of the request
    the innermost error of the chain carries (litellm's own errors carry a placeholder request,
    the HTTP client's the real one)."""
    if api_base is not None:
        return api_base
    urls = [str(getattr(getattr(seen, "request", None), "url", "")) for seen in _chain(error)]
    return next((url for url in reversed(urls) if url.startswith(("http://", "https://"))), None)


def model_error(litellm: ModuleType, model: str, error: Exception, api_base: str | None = None) -> Exception:
    """A clear, traceback-free error for what went wrong with the call, in the provider's words
    (never litellm's class names); an unreachable endpoint is named by the URL tried."""
    detail = plain_detail(error)
    if is_unknown_model(litellm, error):
        return UserError(f"unknown model {model!r}: give a litellm model name such as 'openai/gpt-4o-mini'")
    if is_unreachable(litellm, error):
        where = url_tried(error, api_base)
        return ModelCallError(f"model {model!r}: {where or 'the endpoint'} could not be reached ({detail})")
    if isinstance(error, litellm.AuthenticationError):
        return ModelCallError(f"model {model!r}: the endpoint refused the API key ({detail})")
    if isinstance(error, litellm.NotFoundError):
        return ModelCallError(f"model {model!r}: the endpoint does not know this model ({detail})")
    if isinstance(error, litellm.RateLimitError):
        return ModelCallError(f"model {model!r}: rate limited or out of quota ({detail})")
    if isinstance(error, litellm.Timeout):
        return ModelCallError(f"model {model!r}: no answer in time ({detail})")
    status = getattr(error, "status_code", None)
    return ModelCallError(f"model {model!r}: the call failed{f' (HTTP {status})' if status else ''}: {detail}")


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
