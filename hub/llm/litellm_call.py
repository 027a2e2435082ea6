"""The litellm side of a model call: what runs in the model worker process
(:mod:`dispatch.hub.llm.model_worker`), never in the hub's.

litellm is imported on first use (:func:`load_litellm`, seconds and some 170 MiB); :func:`acompletion`
makes one call with litellm's retries off (``openai/`` and ``anthropic/`` models through litellm's
provider transformation called directly, :mod:`dispatch.hub.llm.litellm_direct`; every other one
through ``litellm.acompletion``) and reads the answer into a
:class:`~dispatch.hub.llm.types.Completion`, priced at :func:`litellm_prices`; :func:`measure`
reads a model's window and counts tokens; :func:`model_error` turns litellm's exceptions into
Dispatch's, and the predicates here tell :mod:`dispatch.hub.llm.failures` what kind they are.
"""

from __future__ import annotations

import os
import re
import ssl
import time
from collections.abc import Iterator, Sequence
from functools import cache
from importlib import resources
from types import ModuleType
from typing import Any, cast

from dispatch.hub.errors import ContextTooLong, ModelCallError, UserError
from dispatch.hub.llm.images import has_images, without_images
from dispatch.hub.llm.litellm_direct import EncodedMessages, PartSink, PlainAnswer, direct_route
from dispatch.hub.llm.litellm_direct import completion as direct_completion
from dispatch.hub.llm.prices import Prices
from dispatch.hub.llm.prompt_cache import needs_breakpoints, with_breakpoints
from dispatch.hub.llm.types import Completion, JsonDict, Measured, ToolCallRequest, Usage


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


@cache
def litellm_prices(model: str) -> Prices | None:
    """litellm's prices for ``model`` (a litellm model name), read from its cost map once per
    model; None when litellm has none (the config's, applied by the key router, are then the
    only ones)."""
    try:
        info: Any = load_litellm().get_model_info(model=model)
    except Exception:  # litellm raises for models missing from its cost map
        return None
    found = cast(dict[str, Any], info)
    given = [found.get(k) for k in ("input_cost_per_token", "output_cost_per_token")]
    if not any(given):
        return None
    read, write = found.get("cache_read_input_token_cost"), found.get("cache_creation_input_token_cost")
    return Prices(
        input=float(given[0] or 0.0),
        output=float(given[1] or 0.0),
        cache_read=None if read is None else float(read),
        cache_write=None if write is None else float(write),
    )


def _count(source: Any, *names: str) -> int:
    """The first of ``names`` that ``source`` (an object or a dict) has as a number, else 0."""
    for name in names:
        value = _field(source, name)
        if isinstance(value, int | float) and value:
            return int(value)
    return 0


def _field(source: Any, name: str) -> Any:
    """``source``'s ``name``, ``source`` an object or a dict (None when it has none)."""
    return cast(dict[str, Any], source).get(name) if isinstance(source, dict) else getattr(source, name, None)


def _usage_of(usage: Any, model: str) -> Usage:
    """The call's tokens (as :class:`~dispatch.hub.llm.types.Usage` defines them) and its cost at
    litellm's prices for ``model``, from the answer's usage (litellm's object, or OpenAI's JSON).
    litellm reports every provider the OpenAI way: ``prompt_tokens`` includes the cached tokens,
    ``prompt_tokens_details.cached_tokens`` are the cache reads and Anthropic's cache writes are
    ``cache_creation_tokens`` there (and ``cache_creation_input_tokens`` on the usage itself)."""
    details = _field(usage, "prompt_tokens_details")
    counted = Usage(
        prompt_tokens=_count(usage, "prompt_tokens"),
        completion_tokens=_count(usage, "completion_tokens"),
        cache_read_tokens=_count(details, "cached_tokens") or _count(usage, "cache_read_input_tokens"),
        cache_write_tokens=_count(details, "cache_creation_tokens") or _count(usage, "cache_creation_input_tokens"),
        calls=1,
    )
    prices = litellm_prices(model)
    if prices is not None:
        counted.cost_usd = prices.cost_usd(counted)
    return counted


_unstreamed: set[str] = set()
"""The models whose streamed calls were refused for asking to stream (a 400 saying so, before any
part came): called without streaming from then on, one answer each."""


async def _streamed(litellm: ModuleType, kwargs: JsonDict, on_part: PartSink) -> Any:
    """``litellm.acompletion`` streamed (usage in the last chunk), its chunks handed to ``on_part``
    as they come, then assembled by litellm into the ``ModelResponse`` it would have answered."""
    chunks: list[Any] = []
    names: dict[int, str] = {}
    stream: Any = await litellm.acompletion(**kwargs, stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        chunks.append(chunk)
        for choice in chunk.choices[:1]:
            _hand_on(choice.delta, names, on_part)
    return litellm.stream_chunk_builder(chunks, messages=kwargs["messages"])


def _hand_on(delta: Any, names: dict[int, str], on_part: PartSink) -> None:
    """The text and tool-call arguments of one streamed chunk's ``delta`` (``names``: the tool of
    each call index so far)."""
    if delta is None:
        return
    if content := getattr(delta, "content", None):
        on_part(str(content), None)
    calls: list[Any] = list(getattr(delta, "tool_calls", None) or [])
    for call in calls:
        function: Any = call.function
        index = int(getattr(call, "index", 0) or 0)
        if getattr(function, "name", None):
            names[index] = str(function.name)
        if arguments := getattr(function, "arguments", None):
            on_part(str(arguments), names.get(index, ""))


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


def is_context_too_long(litellm: ModuleType, error: BaseException) -> bool:
    """The provider refused the request as longer than the model's context window (litellm's
    ``ContextWindowExceededError``, or the provider's own ``context_length_exceeded`` code)."""
    return isinstance(error, litellm.ContextWindowExceededError) or "context_length_exceeded" in str(error)


def untrusted_certificate(error: BaseException) -> str | None:
    """Why the endpoint's certificate was not trusted (``unable to get local issuer certificate``),
    when that is what failed the call (no request was sent); None otherwise."""
    refusals = [seen for seen in _chain(error) if isinstance(seen, ssl.SSLCertVerificationError)]
    if not refusals:
        return None
    refusal = refusals[-1]  # OpenSSL's own (an HTTP client's error may subclass it too)
    return getattr(refusal, "verify_message", None) or "certificate verify failed"


def is_unreachable(litellm: ModuleType, error: BaseException) -> bool:
    """The endpoint was never reached, or not trusted: no request was sent (a timeout is not
    this: it reached a slow endpoint)."""
    if isinstance(error, litellm.Timeout):
        return False
    return _connection_failed(litellm, error) or untrusted_certificate(error) is not None


_CLASS_PREFIX = re.compile(r"^(?:[\w.]*?(?:Error|Exception|Exceptions?))\s*(?::|-)\s*")
_HANDLE_WITH = re.compile(r"\s*Handle with `litellm\.\w+`\.?\s*$")
"""The advice to programmers litellm adds to some providers' errors."""


def plain_detail(error: BaseException) -> str:
    """The first line of ``error``'s text without the chain of class names litellm puts before
    the provider's words (``litellm.AuthenticationError: AuthenticationError: OpenAIException - ``)."""
    text = str(error).strip().splitlines()[0].strip() if str(error).strip() else ""
    while (match := _CLASS_PREFIX.match(text)) is not None and match.end() < len(text):
        text = text[match.end() :]
    return _HANDLE_WITH.sub("", text) or "no detail given"


def connection_lost(error: BaseException) -> bool:
    """The request reached the endpoint, but its connection failed before an answer came (no
    HTTP status, though litellm files it under a server error's)."""
    import httpx

    return any(
        isinstance(seen, httpx.TransportError) or type(seen).__module__.startswith("aiohttp.") for seen in _chain(error)
    )


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
    where = url_tried(error, api_base) or "the endpoint"
    untrusted = untrusted_certificate(error)
    if untrusted is not None:
        return ModelCallError(
            f"model {model!r}: the certificate of {where} is not trusted ({untrusted}); if a proxy of your "
            "network or your company signs it, set SSL_CERT_FILE to that authority's certificate (a PEM file)"
        )
    if is_unreachable(litellm, error):
        return ModelCallError(f"model {model!r}: {where} could not be reached ({detail})")
    if isinstance(error, litellm.AuthenticationError):
        return ModelCallError(f"model {model!r}: the endpoint refused the API key ({detail})")
    if isinstance(error, litellm.NotFoundError):
        return ModelCallError(f"model {model!r}: the endpoint does not know this model ({detail})")
    if isinstance(error, litellm.RateLimitError):
        return ModelCallError(f"model {model!r}: rate limited or out of quota ({detail})")
    if isinstance(error, litellm.Timeout):
        return ModelCallError(f"model {model!r}: no answer in time ({detail})")
    if is_context_too_long(litellm, error):
        return ContextTooLong(f"model {model!r}: the request is longer than its context window ({detail})")
    if connection_lost(error):
        return ModelCallError(f"model {model!r}: the connection to {where} failed before an answer came ({detail})")
    status = getattr(error, "status_code", None)
    return ModelCallError(f"model {model!r}: the call failed{f' (HTTP {status})' if status else ''}: {detail}")


def measure(
    litellm: ModuleType, model: str, messages: Sequence[JsonDict] | None, tools: Sequence[JsonDict]
) -> Measured:
    """litellm's knowledge of ``model``: its input window from litellm's model info (None when
    litellm does not know the model) and, given ``messages``, their tokens by litellm's counter."""
    window: int | None = None
    try:
        info: Any = litellm.get_model_info(model)
        found = info.get("max_input_tokens") or info.get("max_tokens")
        window = int(found) if found else None
    except Exception:  # litellm raises for a model missing from its map: the window is unknown
        window = None
    tokens: int | None = None
    if messages is not None:
        # litellm points tiktoken at its bundled tokenizers when it loads; the worker takes the hub's
        # environment over whole before a call, which drops that, and tiktoken would go online
        bundled = str(resources.files(litellm).joinpath("litellm_core_utils/tokenizers"))
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.environ.get("CUSTOM_TIKTOKEN_CACHE_DIR") or bundled)
        try:
            tokens = int(litellm.token_counter(model=model, messages=list(messages), tools=list(tools) or None))
        except Exception:  # a message shape litellm's counter does not take: the hub estimates
            tokens = None
    return Measured(window=window, tokens=tokens)


def accepts_images(litellm: ModuleType, model: str) -> bool:
    """Whether litellm knows ``model`` to take image parts (False for a model it does not know)."""
    try:
        return bool(litellm.supports_vision(model=model))
    except Exception:  # a model missing from litellm's map
        return False


def _prepared(
    litellm: ModuleType,
    model: str,
    messages: Sequence[JsonDict],
    tools: Sequence[JsonDict],
    known: EncodedMessages | None = None,
) -> tuple[Sequence[JsonDict], Sequence[JsonDict]]:
    """The messages and tools as ``model`` gets them: images described when it takes none, and
    prompt-cache breakpoints where it needs them. (The messages ``known`` has encoded are plain:
    no images among them to look for.)"""
    unseen = messages[known.reused(list(messages)) :] if known is not None else messages
    if any(has_images(m) for m in unseen) and not accepts_images(litellm, model):
        messages = without_images(messages, model)
    if needs_breakpoints(model):
        messages, tools = with_breakpoints(messages, tools)
    return messages, tools


async def acompletion(
    litellm: ModuleType,
    model: str,
    messages: Sequence[JsonDict],
    tools: Sequence[JsonDict],
    timeout_s: float,
    api_key: str | None,
    api_base: str | None,
    extra: JsonDict | None,
    *,
    direct: bool = True,
    on_part: PartSink | None = None,
    known: EncodedMessages | None = None,
) -> Completion:
    """One model call (in the model worker), with prompt-cache breakpoints for the models that
    need them (:mod:`dispatch.hub.llm.prompt_cache`): straight through litellm's provider
    transformation for the calls :func:`~dispatch.hub.llm.litellm_direct.direct_route` sends
    there (unless ``direct`` is False), else ``litellm.acompletion``. Either way the answer is a
    litellm ``ModelResponse``, read the same (or, for a plain OpenAI answer on the direct path, the
    same fields read from its JSON), and a failure is litellm's exception; the answer's
    cost is litellm's price for the model (:func:`litellm_prices`), never litellm's per-call cost
    bookkeeping. With ``on_part`` the call streams (``on_part(text, tool)`` for each part of the
    answer as it arrives) and the answer is the same, assembled from the stream; a model or
    endpoint that will not stream answers at once instead. ``known``: the thread's messages as
    its last direct call encoded them (the direct path then encodes only those that follow)."""
    started = time.perf_counter()
    messages, tools = _prepared(litellm, model, messages, tools, known)
    kwargs: JsonDict = {"model": model, "messages": list(messages), "num_retries": 0, "timeout": timeout_s}
    if tools:
        kwargs["tools"] = list(tools)
    if api_key is not None:
        kwargs["api_key"] = api_key
    if api_base is not None:
        kwargs["api_base"] = api_base
    kwargs.update(extra or {})
    route = direct_route(litellm, model, api_key, extra) if direct else None

    async def respond(stream: PartSink | None) -> Any:
        if route is not None:
            return await direct_completion(
                litellm, route, model, list(messages), list(tools), timeout_s, api_base, extra,
                on_part=stream, known=known,
            )  # fmt: skip
        if stream is not None:
            return await _streamed(litellm, kwargs, stream)
        return await litellm.acompletion(**kwargs)

    sink = on_part if model not in _unstreamed else None
    handed = False

    def part(text: str, tool: str | None) -> None:
        nonlocal handed
        handed = True
        if sink is not None:
            sink(text, tool)

    try:
        response: Any = await respond(part if sink is not None else None)
    except litellm.BadRequestError as error:
        if sink is None or handed or "stream" not in str(error).lower():
            raise
        _unstreamed.add(model)  # refused for asking to stream: one answer, from now on
        response = await respond(None)
    if isinstance(response, PlainAnswer):  # read by the direct path itself
        text, calls, usage = response.text, response.tool_calls, response.usage
    else:
        choice: Any = response.choices[0].message
        raw_calls: list[Any] = list(choice.tool_calls or [])
        text, usage = choice.content, getattr(response, "usage", None)
        calls = [
            ToolCallRequest(id=str(c.id), name=str(c.function.name), arguments=str(c.function.arguments or "{}"))
            for c in raw_calls
        ]
    return Completion(
        text=text, tool_calls=calls, usage=_usage_of(usage, model), model=model, latency_s=time.perf_counter() - started
    )
