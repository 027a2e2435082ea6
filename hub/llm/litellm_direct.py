"""The model worker's direct path: a chat completion made with litellm's own provider
transformation and one POST, without ``litellm.acompletion``'s per-call bookkeeping.

``litellm.acompletion`` costs the worker several times the CPU of the HTTP call itself
(``python -m bench.model_calls``), and most of it is work Dispatch does not use: the logging
object and its success handler, response metadata and hidden params, litellm's own cost
calculation, the standard logging payload and its redaction. For the providers whose litellm
config objects carry the whole chat transformation, the worker skips that and calls the provider
layer itself: ``get_optional_params`` (the OpenAI-style parameters into the provider's),
the config's ``validate_environment`` (headers), ``transform_request`` (the body),
one POST through one shared aiohttp session per worker, and ``transform_response`` (a
``ModelResponse``, read like any other; an OpenAI answer of the plain shape, text and function
calls, has its few fields read from its JSON instead, :func:`plain_answer`); a refused request
becomes the config's error class, then litellm's ``exception_type``, so a failure is the same
litellm exception either way and :mod:`dispatch.hub.llm.failures` classifies it as before.

Which calls go direct is one rule, :func:`direct_route`: a model named ``openai/...`` or
``anthropic/...`` with an API key (given, or litellm's from the environment) and no extra
parameters beyond :data:`PLAIN_EXTRA`. Everything else (every other provider, a call with no key,
other parameters) goes through ``litellm.acompletion``.

A streamed call asks the provider for server-sent events, hands each part of the answer on as it
arrives, and assembles the events into the JSON body the provider answers without streaming
(OpenAI's chat completion, Anthropic's message, usage included), which ``transform_response``
reads as ever: the answer, its usage and its cost are those of the same call unstreamed. An
endpoint that answers JSON to a streamed request (one that does not stream) is read as such.

An OpenAI-compatible call of a thread (:class:`EncodedMessages`, kept by the worker per agent)
transforms and encodes only the messages that follow those its last call encoded, and splices the
earlier ones' JSON into the body: litellm's transformation walks every message of every call
(most of a long transcript's cost, beyond the POST itself), and for plain messages (text, tool
calls and results: no images, no cache marks, no system message but the first) it maps each
message on its own, so the body is the same as the whole transcript's (tested against
``litellm.acompletion``). Any other message sends the call whole, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from functools import cache
from importlib import import_module
from types import ModuleType
from typing import Any, cast
from weakref import WeakKeyDictionary

from dispatch.hub.llm.types import JsonDict, ToolCallRequest

DIRECT_PROVIDERS = ("openai", "anthropic")
"""The providers whose calls go direct (litellm's prefix of the model name)."""

PLAIN_EXTRA = frozenset({"max_tokens", "temperature", "top_p", "stop", "seed"})
"""The extra call parameters the direct path takes (litellm maps them for the provider)."""

PartSink = Callable[[str, str | None], None]
"""Called with each part of a streamed answer: its text and the tool whose call arguments it is
(None: answer text)."""


def direct_route(litellm: ModuleType, model: str, api_key: str | None, extra: JsonDict | None) -> _Route | None:
    """The provider and API key of a call that goes direct (the key given, else litellm's from the
    environment); None for a call that goes through ``litellm.acompletion``."""
    provider, slash, _ = model.partition("/")
    if not slash or provider not in DIRECT_PROVIDERS or (extra and not set(extra) <= PLAIN_EXTRA):
        return None
    if provider == "anthropic":
        from litellm.llms.anthropic.common_utils import AnthropicModelInfo

        key = AnthropicModelInfo.get_api_key(api_key)
    else:
        key = litellm.llms.openai.chat.gpt_transformation.OpenAIGPTConfig.get_api_key(api_key)
    return None if not key else _Route(provider, str(key))


@dataclass
class EncodedMessages:
    """One thread's messages as its last OpenAI-compatible call sent them: the messages (the
    worker's own objects, matched by identity) and each one's JSON as it went in the body."""

    sources: list[JsonDict] = field(default_factory=list[JsonDict])
    fragments: list[bytes] = field(default_factory=list[bytes])
    head: _Head | None = None
    """What its last call made of everything but the messages, for a next call of the same model,
    key, endpoint, parameters and tools."""

    def reused(self, messages: list[JsonDict]) -> int:
        """How many of ``messages``, from the first, are those already encoded."""
        count = min(len(self.sources), len(messages))
        if self.sources[:count] == messages[:count]:  # the same objects: compared without a walk
            return count
        count = 0
        for kept, message in zip(self.sources, messages, strict=False):
            if kept is not message:
                break
            count += 1
        return count


@dataclass
class _Head:
    """A call's request but for its messages: what litellm's ``get_optional_params``, the
    config's ``validate_environment`` and the URL's resolution made of the call's model, key,
    endpoint, parameters and tools, and the body's JSON around its messages. The same inputs
    give the same (litellm's mapping of them is a function of them and of its settings, which
    the environment's generation stands for), so a thread's next call reuses it."""

    model: str
    api_key: str
    api_base: str | None
    extra: JsonDict | None
    tools: list[JsonDict]
    generation: int
    optional: JsonDict
    url: str
    headers: JsonDict
    rest: JsonDict | None = None
    """The body but for its messages, as the first call it served sent it."""
    around: tuple[bytes, bytes] | None = None
    """The body's JSON before and after its messages, once a call has encoded it."""

    def serves(
        self, model: str, api_key: str, api_base: str | None, extra: JsonDict | None, tools: list[JsonDict]
    ) -> bool:
        """Whether a call of these is the same request but for its messages (tools compared by
        value, at C speed: the worker parses them anew each call)."""
        return (
            self.generation == _generation[0]
            and (self.model, self.api_key, self.api_base) == (model, api_key, api_base)
            and self.extra == extra
            and self.tools == tools
        )


_generation = [0]
"""Bumped when the worker's environment changes (:func:`forget_environment`): litellm's settings
may have, and no kept :class:`_Head` then serves."""


_MESSAGES_MARK = "\x00dispatch:messages\x00"
"""Stands for the messages in a body encoded without them (JSON escapes it: it cannot clash)."""


def _plain(message: JsonDict, first: bool) -> bool:
    """Whether litellm transforms ``message`` on its own (see the module's docstring)."""
    role = message.get("role")
    content = message.get("content")
    return (
        (role in ("user", "assistant", "tool") or (role == "system" and first))
        and (content is None or isinstance(content, str))
        and "cache_control" not in message
    )


def _encode_messages(litellm: ModuleType, known: EncodedMessages, messages: list[JsonDict]) -> tuple[int, bool]:
    """Where the messages still to transform begin (after those ``known`` has encoded), and
    whether the call goes incrementally at all (False: whole, ``known`` emptied)."""
    start = known.reused(messages)
    rest = messages[start:]
    if not litellm.openai_system_messages_first and all(_plain(m, start + i == 0) for i, m in enumerate(rest)):
        return start, True
    known.sources, known.fragments = [], []
    return 0, False


@dataclass(frozen=True)
class _Route:
    provider: str
    api_key: str


class _NoLogging:
    """What the provider transformations are handed as litellm's logging object: they report the
    raw request and response to it, and Dispatch keeps neither."""

    model_call_details: JsonDict = {}  # noqa: RUF012 (read, never written, by the transformations)

    def pre_call(self, *args: object, **kwargs: object) -> None:
        return None

    def post_call(self, *args: object, **kwargs: object) -> None:
        return None


@cache
def _config(litellm: ModuleType, model: str, provider: str) -> Any:
    return litellm.utils.ProviderConfigManager.get_provider_chat_config(
        model=model, provider=litellm.LlmProviders(provider)
    )


_sessions: WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, AsyncIterator[None]]] = WeakKeyDictionary()


async def _session(litellm: ModuleType) -> Any:
    """The worker's one HTTP session (a connection pool kept across calls) for its event loop,
    closed as the loop shuts down.

    aiohttp, the client litellm's own calls go through by default (its ``httpx`` client is a shell
    around an aiohttp transport), without the ``httpx`` layer on top: a call costs a quarter of
    the CPU. Set up as litellm sets up its session: its certificate rules (``SSL_VERIFY``,
    ``SSL_CERT_FILE``, ``litellm.ssl_verify``), ``litellm.force_ipv4``, no cookies. Proxies are
    :func:`_proxy`'s (aiohttp's own reading of the environment costs a thread hop a request)."""
    import aiohttp
    from litellm.llms.custom_httpx.http_handler import get_ssl_configuration

    loop = asyncio.get_running_loop()
    kept = _sessions.get(loop)
    if kept is not None and not kept[0].closed:
        return kept[0]
    verify = get_ssl_configuration()
    connector = aiohttp.TCPConnector(
        limit=0,  # no cap on connections: calls wait on the model, not on the pool
        ssl=verify if not isinstance(verify, str) else True,
        local_addr=("0.0.0.0", 0) if litellm.force_ipv4 else None,
    )
    session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)
    closer = _closed_at_shutdown(session)
    await anext(closer)  # the loop now holds it, and closes it with its other async generators
    _sessions[loop] = (session, closer)
    return session


_proxies: dict[str, str | None] = {}


def _proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``ALL_PROXY``) unless ``NO_PROXY`` covers its host, as ``httpx`` reads them; found once per
    origin (:func:`forget_environment` when the environment changes)."""
    scheme, _, rest = url.partition("://")
    origin = f"{scheme}://{rest.partition('/')[0]}"
    if origin not in _proxies:
        import urllib.parse
        import urllib.request

        host = urllib.parse.urlsplit(url).hostname or ""
        proxies = urllib.request.getproxies()
        found = None if urllib.request.proxy_bypass(host) else proxies.get(scheme) or proxies.get("all")
        _proxies[origin] = found
    return _proxies[origin]


_requests: dict[str, Any] = {}


def _request(url: str) -> Any:
    """The ``httpx.Request`` an answer from ``url`` is read with: one per URL, made once (the
    transformations read it, never change it)."""
    import httpx

    if url not in _requests:
        if len(_requests) > 64:
            _requests.clear()
        _requests[url] = httpx.Request("POST", url)
    return _requests[url]


def forget_environment() -> None:
    """Read the proxies and map each call's parameters again (the worker's environment changed)."""
    _proxies.clear()
    _generation[0] += 1


async def _closed_at_shutdown(session: Any) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await session.close()


def _response(status: int, headers: Any, content: bytes, url: str) -> Any:
    """An aiohttp answer as the ``httpx.Response`` litellm's transformations read (its body
    decoded by ``httpx``, as its own answers are)."""
    import httpx

    return httpx.Response(status, headers=list(headers), content=content, request=_request(url))


def _url(litellm: ModuleType, provider: str, config: Any, model: str, api_key: str, api_base: str | None) -> str:
    """Where the call goes, resolved as ``litellm.acompletion`` resolves it."""
    if provider == "anthropic":
        from litellm.litellm_core_utils.url_utils import ensure_api_route
        from litellm.llms.anthropic.common_utils import AnthropicModelInfo
        from litellm.secret_managers.main import get_secret_bool

        base = str(AnthropicModelInfo.get_api_base(api_base))
        return (
            base if get_secret_bool("LITELLM_ANTHROPIC_DISABLE_URL_SUFFIX") else ensure_api_route(base, "v1/messages")
        )
    base = litellm.llms.openai.chat.gpt_transformation.OpenAIGPTConfig.get_api_base(api_base)
    return str(config.get_complete_url(base, api_key, model, {}, {}))


@dataclass(frozen=True)
class PlainAnswer:
    """An OpenAI chat completion read straight from its JSON: its first choice's text and tool
    calls, and its usage as the endpoint reported it."""

    text: str | None
    tool_calls: list[ToolCallRequest]
    usage: JsonDict


_PLAIN_USAGE = frozenset({"prompt_tokens", "completion_tokens", "total_tokens", "completion_tokens_details"})
_PLAIN_PROMPT_DETAILS = frozenset({"cached_tokens", "audio_tokens"})


def plain_answer(content: bytes) -> PlainAnswer | None:
    """``content`` read as :class:`PlainAnswer` when it is a chat completion of the plain shape
    that litellm's ``transform_response`` reads into the same text, tool calls and usage (text or
    none, function calls with an id, a name and string arguments, OpenAI's usage fields); None
    for anything else, which litellm reads as ever. litellm's reading builds its whole response
    object (a fifth of the worker's CPU a call, ``bench.fleet``) to be read for these few fields.
    The text goes through litellm's own split of a reasoning model's ``<think>`` part."""
    try:
        data: object = json.loads(content)
    except ValueError:
        return None
    answer = _object(data)
    choices = answer.get("choices") if answer is not None else None
    first = _object(cast(list[object], choices)[0]) if isinstance(choices, list) and choices else None
    message = _object(first.get("message")) if first is not None else None
    usage = _object((answer or {}).get("usage") or {})
    if message is None or usage is None or not _plain_usage(usage):
        return None
    text = message.get("content")
    if text is not None and not isinstance(text, str):
        return None
    calls: list[ToolCallRequest] = []
    for listed in cast(list[object], message.get("tool_calls") or []):
        call = _object(listed)
        function = _object(call.get("function")) if call is not None else None
        if call is None or function is None or call.get("type", "function") != "function":
            return None
        call_id, name, arguments = call.get("id"), function.get("name"), function.get("arguments")
        if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(arguments, str)):
            return None
        if name == "multi_tool_use.parallel":  # litellm unfolds these into the calls they hold
            return None
        calls.append(ToolCallRequest(id=call_id, name=name, arguments=arguments or "{}"))
    from litellm.litellm_core_utils.prompt_templates.reasoning_utils import extract_reasoning_content

    _, text = extract_reasoning_content(message)
    return PlainAnswer(text, calls, usage)


def _object(value: object) -> JsonDict | None:
    """``value`` as a JSON object, or None when it is not one."""
    return cast(JsonDict, value) if isinstance(value, dict) else None


def _plain_usage(usage: JsonDict) -> bool:
    details = _object(usage.get("prompt_tokens_details") or {})
    return (
        set(usage) - {"prompt_tokens_details"} <= _PLAIN_USAGE
        and details is not None
        and set(details) <= _PLAIN_PROMPT_DETAILS
    )


class _NotOneEach(Exception):
    """The transformation did not give one message for each: the call goes whole."""


async def completion(
    litellm: ModuleType,
    route: _Route,
    model: str,
    messages: list[JsonDict],
    tools: list[JsonDict],
    timeout_s: float,
    api_base: str | None,
    extra: JsonDict | None,
    *,
    on_part: PartSink | None = None,
    known: EncodedMessages | None = None,
) -> Any:
    """One chat completion of ``model`` (``provider/name``) as litellm's ``ModelResponse``; a
    failure raises the litellm exception ``litellm.acompletion`` would have raised. With
    ``on_part`` it streams; with ``known`` (a thread's), an OpenAI-compatible call encodes only
    the messages that follow the ones it has (see the module's docstring)."""
    if known is not None and route.provider == "openai":
        try:
            return await _completion(litellm, route, model, messages, tools, timeout_s, api_base, extra, on_part, known)
        except _NotOneEach:
            known.sources, known.fragments = [], []
    return await _completion(litellm, route, model, messages, tools, timeout_s, api_base, extra, on_part, None)


async def _completion(
    litellm: ModuleType,
    route: _Route,
    model: str,
    messages: list[JsonDict],
    tools: list[JsonDict],
    timeout_s: float,
    api_base: str | None,
    extra: JsonDict | None,
    on_part: PartSink | None,
    known: EncodedMessages | None,
) -> Any:
    provider, api_key = route.provider, route.api_key
    name = model.partition("/")[2]
    config = _config(litellm, name, provider)
    litellm_params: JsonDict = {"custom_llm_provider": provider, "api_base": api_base}
    utils: Any = litellm.utils
    whole = messages
    start, incremental = (0, False) if known is None else _encode_messages(litellm, known, messages)
    sent = messages[start:]
    try:
        # what litellm.completion does to every request before the provider's handler
        messages = utils.validate_and_fix_openai_messages(messages=[dict(m) for m in sent])
        head = known.head if known is not None and incremental else None
        if head is None or not head.serves(model, api_key, api_base, extra, tools):
            head = _head(litellm, config, route, model, api_base, extra, tools, messages, litellm_params)
            if known is not None and incremental:
                known.head = head
        optional, url, headers = dict(head.optional), head.url, dict(head.headers)
        headers, data = await _transformed(config, provider, name, messages, litellm_params, head, optional, headers)
        fragments: list[bytes] | None = None
        if known is not None and incremental:
            transformed = cast(list[JsonDict], data["messages"])
            if len(transformed) != len(sent):  # plain messages are one each
                raise _NotOneEach
            known.sources = [*known.sources[:start], *sent]
            known.fragments = [*known.fragments[:start], *(_encoded(m) for m in transformed)]
            fragments = known.fragments
            head.rest = head.rest or {key: value for key, value in data.items() if key != "messages"}
        if on_part is None:
            around = None
            if fragments is not None:
                around = head.around = head.around or _around(data)
            body = _body(data, fragments, around)
            raw = await _post(litellm, provider, config, name, url, headers, body, timeout_s)
            if provider == "openai" and (plain := plain_answer(raw.content)) is not None:
                return plain
            response = raw.response()
        else:
            data["stream"] = True
            if provider == "openai":
                data["stream_options"] = {"include_usage": True}
            body = _body(data, fragments)
            response = await _post_streamed(litellm, provider, config, name, url, headers, body, timeout_s, on_part)
            if provider == "openai" and (plain := plain_answer(response.content)) is not None:
                return plain
            data = {key: value for key, value in data.items() if key not in ("stream", "stream_options")}
        return config.transform_response(
            model=name, raw_response=response, model_response=litellm.ModelResponse(), logging_obj=_NoLogging(),
            request_data=data, messages=messages if known is None else whole, optional_params=optional,
            litellm_params=litellm_params,
            encoding=None, api_key=api_key, json_mode=False,
        )  # fmt: skip
    except _NotOneEach:
        raise
    except Exception as error:
        raise litellm.litellm_core_utils.exception_mapping_utils.exception_type(
            model=name, original_exception=error, custom_llm_provider=provider,
            completion_kwargs={"model": model}, extra_kwargs={},
        ) from error  # fmt: skip


def _head(
    litellm: ModuleType,
    config: Any,
    route: _Route,
    model: str,
    api_base: str | None,
    extra: JsonDict | None,
    tools: list[JsonDict],
    messages: list[JsonDict],
    litellm_params: JsonDict,
) -> _Head:
    """A call's request but for its messages, as ``litellm.completion`` makes it."""
    utils: Any = litellm.utils
    provider, api_key, name = route.provider, route.api_key, model.partition("/")[2]
    optional: JsonDict = utils.get_optional_params(
        model=name,
        custom_llm_provider=provider,
        tools=utils.validate_and_fix_openai_tools(tools=tools or None),
        messages=messages,
        **(extra or {}),
    )
    for unused in ("stream", "stream_options", "max_retries", "json_mode"):  # the handlers' own
        optional.pop(unused, None)
    url = _url(litellm, provider, config, name, api_key, api_base)
    headers: JsonDict = config.validate_environment(
        headers={}, model=name, messages=messages, optional_params=optional,
        litellm_params=litellm_params, api_key=api_key, api_base=url,
    )  # fmt: skip
    return _Head(model, api_key, api_base, extra, tools, _generation[0], dict(optional), url, dict(headers))


async def _transformed(
    config: Any,
    provider: str,
    model: str,
    messages: list[JsonDict],
    litellm_params: JsonDict,
    head: _Head,
    optional: JsonDict,
    headers: JsonDict,
) -> tuple[JsonDict, JsonDict]:
    """The headers and body as sent: the provider's transformation of the request. A head that
    has served a call (a thread's, OpenAI-compatible, plain messages) already has the body but
    for its messages, so only the messages are transformed: the parameters without the tools,
    which litellm would otherwise walk and sanitise again each call (and which plain messages'
    transformation does not read)."""
    if head.rest is not None:
        lean = {key: value for key, value in optional.items() if key != "tools"}
        data: JsonDict = await config.async_transform_request(
            model=model, messages=messages, optional_params=lean, litellm_params=litellm_params, headers=headers
        )
        return headers, head.rest | {"messages": data["messages"]}
    if provider == "anthropic":
        optional["is_vertex_request"] = False
    data = await config.async_transform_request(
        model=model, messages=messages, optional_params=optional, litellm_params=litellm_params, headers=headers
    )
    return _as_sent(provider, model, head.url, headers, data)


def _as_sent(provider: str, model: str, url: str, headers: JsonDict, data: JsonDict) -> tuple[JsonDict, JsonDict]:
    """The headers and body as sent, from the provider transformation's."""
    if provider == "anthropic":
        # what litellm's Anthropic handler does to every request after the transformation
        betas = import_module("litellm.anthropic_beta_headers_manager")
        headers, data = betas.update_request_with_filtered_beta(
            headers=headers, request_data=data, provider=provider, api_base=url
        )
        gated = import_module("litellm.anthropic_beta_gated_fields")
        stripped = gated.strip_beta_gated_request_body(data, headers, drop_params=None, model=model, provider=provider)
        return headers, dict(stripped)
    # what the OpenAI SDK does with the options litellm hands it beside the body
    sdk_options = ("extra_body", "extra_headers", "extra_query")
    return headers, {key: value for key, value in data.items() if key not in sdk_options} | dict(
        data.get("extra_body") or {}
    )


async def _post(
    litellm: ModuleType,
    provider: str,
    config: Any,
    model: str,
    url: str,
    headers: JsonDict,
    body: bytes,
    timeout_s: float,
) -> Any:
    """The POST itself, its answer as it came (an ``httpx.Response`` is made only when litellm is to
    read it); a timeout is litellm's ``Timeout``, anything else the provider's error."""
    with _transport_errors(litellm, provider, config, model, timeout_s, url):
        async with (await _session(litellm)).post(
            url, headers=headers, data=body, timeout=_timeout(timeout_s), proxy=_proxy(url)
        ) as answer:
            raw = _Raw(answer.status, answer.raw_headers, await answer.read(), url)
    if raw.status >= 400:
        response = raw.response()
        raise _refusal(provider, config, response.status_code, response.text, response.headers)
    return raw


@dataclass(frozen=True)
class _Raw:
    """An answer as aiohttp read it."""

    status: int
    headers: Any
    content: bytes
    url: str

    def response(self) -> Any:
        return _response(self.status, self.headers, self.content, self.url)


def _timeout(timeout_s: float) -> Any:
    import aiohttp

    return aiohttp.ClientTimeout(total=timeout_s)


def _encoded(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _around(data: JsonDict) -> tuple[bytes, bytes]:
    """``data``'s JSON before and after its messages."""
    head, mark, tail = _encoded(data | {"messages": _MESSAGES_MARK}).partition(_encoded(_MESSAGES_MARK))
    if not mark:
        raise ValueError("the request body lost its messages")
    return head, tail


def _body(data: JsonDict, fragments: list[bytes] | None, around: tuple[bytes, bytes] | None = None) -> bytes:
    """``data`` as the request's body; with ``fragments``, its messages are those, spliced in
    where the messages go (the same bytes as encoding the whole), into ``around`` when given
    (the rest of ``data``, encoded by an earlier call)."""
    if fragments is None:
        return _encoded(data)
    head, tail = around or _around(data)
    return b"".join((head, b"[", b",".join(fragments), b"]", tail))


def _refusal(provider: str, config: Any, status: int, text: str, headers: Any) -> Exception:
    """The provider's error class for an HTTP refusal (OpenAI's message read out of its JSON)."""
    text = _openai_message(text) if provider == "openai" else text
    return config.get_error_class(error_message=text, status_code=status, headers=headers)


@contextlib.contextmanager
def _transport_errors(
    litellm: ModuleType, provider: str, config: Any, model: str, timeout_s: float, url: str
) -> Generator[None]:
    """A timeout as litellm's ``Timeout``, any other transport failure as the provider's error,
    caused by an ``httpx`` error that carries the request (the URL tried, which an unreachable
    endpoint's message names)."""
    import aiohttp
    import httpx

    try:
        yield
    except TimeoutError as error:  # aiohttp's timeouts are TimeoutErrors too
        raise litellm.Timeout(
            message=f"no answer within {timeout_s:g} s", model=model, llm_provider=provider
        ) from error
    except aiohttp.ClientError as error:
        failed = httpx.TransportError(str(error), request=_request(url))
        failed.__cause__ = error
        raise config.get_error_class(error_message=str(error), status_code=500, headers={}) from failed


async def _post_streamed(
    litellm: ModuleType,
    provider: str,
    config: Any,
    model: str,
    url: str,
    headers: JsonDict,
    body: bytes,
    timeout_s: float,
    on_part: PartSink,
) -> Any:
    """The streamed POST, its parts handed to ``on_part``: the HTTP response the provider would
    have given unstreamed (its events assembled into that JSON body); errors as :func:`_post`'s."""
    import httpx

    with _transport_errors(litellm, provider, config, model, timeout_s, url):
        async with (
            asyncio.timeout(timeout_s),
            (await _session(litellm)).post(
                url, headers=headers, data=body, timeout=_timeout(timeout_s), proxy=_proxy(url), auto_decompress=True
            ) as answer,
        ):
            if answer.status >= 400 or not answer.headers.get("content-type", "").startswith("text/event-stream"):
                # a refusal, or an endpoint that does not stream: its one answer, read whole (and
                # decoded here, as the events are)
                kept = [(k, v) for k, v in answer.raw_headers if k.lower() not in _ENCODING_HEADERS]
                response = _response(answer.status, kept, await answer.read(), url)
                if response.status_code >= 400:
                    raise _refusal(provider, config, response.status_code, response.text, response.headers)
                return response
            events = _events(_lines(answer.content))
            if provider == "anthropic":
                assembled = await _anthropic_message(events, on_part, config)
            else:
                assembled = await _openai_completion(events, on_part)
            kept = [(k, v) for k, v in answer.headers.items() if k.lower() not in _BODY_HEADERS]
            return httpx.Response(200, headers=kept, json=assembled, request=_request(url))


async def _lines(content: Any) -> AsyncIterator[str]:
    """A streamed body's lines, as text without their line ends."""
    async for line in content:
        yield bytes(line).decode().rstrip("\r\n")


_ENCODING_HEADERS = frozenset({b"content-length", b"content-encoding", b"transfer-encoding"})
"""The headers that do not hold for a body once decoded."""
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding", "transfer-encoding"})
"""The headers of a stream that do not hold for the JSON body assembled from it."""


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[JsonDict]:
    """The JSON of each server-sent event's ``data:`` line, until OpenAI's ``[DONE]``."""
    async for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        if payload:
            parsed: Any = json.loads(payload)
            if isinstance(parsed, dict):
                yield cast(JsonDict, parsed)


async def _openai_completion(events: AsyncIterator[JsonDict], on_part: PartSink) -> JsonDict:
    """OpenAI's chat completion body, assembled from its stream's chunks."""
    head: JsonDict = {}
    text: list[str] = []
    calls: dict[int, JsonDict] = {}
    arguments: dict[int, list[str]] = {}
    finish: Any = None
    usage: Any = None
    async for chunk in events:
        head = head or {k: v for k, v in chunk.items() if k not in ("choices", "usage", "object", "obfuscation")}
        usage = chunk.get("usage") or usage
        for choice in cast(list[JsonDict], chunk.get("choices") or [])[:1]:
            finish = choice.get("finish_reason") or finish
            delta = cast(JsonDict, choice.get("delta") or {})
            if content := delta.get("content"):
                text.append(str(content))
                on_part(str(content), None)
            for call in cast(list[JsonDict], delta.get("tool_calls") or []):
                index = int(call.get("index") or 0)
                function = cast(JsonDict, call.get("function") or {})
                known = calls.setdefault(index, {"id": "", "type": "function", "function": {"name": ""}})
                known["id"] = call.get("id") or known["id"]
                known["function"]["name"] = function.get("name") or known["function"]["name"]
                if part := function.get("arguments"):
                    arguments.setdefault(index, []).append(str(part))
                    on_part(str(part), str(known["function"]["name"]))
    message: JsonDict = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        for index, call in calls.items():
            call["function"]["arguments"] = "".join(arguments.get(index, []))
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    choice = {"index": 0, "message": message, "finish_reason": finish or ("tool_calls" if calls else "stop")}
    return head | {"object": "chat.completion", "choices": [choice]} | ({"usage": usage} if usage else {})


async def _anthropic_message(events: AsyncIterator[JsonDict], on_part: PartSink, config: Any) -> JsonDict:
    """Anthropic's message body, assembled from its stream's events (a stream's ``error`` event
    raises as the same error answered at once would)."""
    message: JsonDict = {}
    blocks: dict[int, JsonDict] = {}
    partial: dict[int, list[str]] = {}
    async for event in events:
        kind = event.get("type")
        if kind == "message_start":
            message = dict(cast(JsonDict, event.get("message") or {}))
        elif kind == "content_block_start":
            blocks[int(event.get("index") or 0)] = dict(cast(JsonDict, event.get("content_block") or {}))
        elif kind == "content_block_delta":
            index = int(event.get("index") or 0)
            block = blocks.setdefault(index, {"type": "text", "text": ""})
            delta = cast(JsonDict, event.get("delta") or {})
            match delta.get("type"):
                case "text_delta":
                    block["text"] = str(block.get("text") or "") + str(delta.get("text") or "")
                    on_part(str(delta.get("text") or ""), None)
                case "input_json_delta":
                    partial.setdefault(index, []).append(str(delta.get("partial_json") or ""))
                    on_part(str(delta.get("partial_json") or ""), str(block.get("name") or ""))
                case "thinking_delta":
                    block["thinking"] = str(block.get("thinking") or "") + str(delta.get("thinking") or "")
                case "signature_delta":
                    block["signature"] = str(block.get("signature") or "") + str(delta.get("signature") or "")
                case _:
                    pass
        elif kind == "message_delta":
            message.update({k: v for k, v in cast(JsonDict, event.get("delta") or {}).items() if v is not None})
            usage = cast(JsonDict, event.get("usage") or {})
            message["usage"] = dict(cast(JsonDict, message.get("usage") or {})) | {
                k: v for k, v in usage.items() if v is not None
            }
        elif kind == "error":
            error = cast(JsonDict, event.get("error") or {})
            status = 529 if error.get("type") == "overloaded_error" else 500
            raise config.get_error_class(error_message=json.dumps(event), status_code=status, headers={})
    for index, pieces in partial.items():
        joined = "".join(pieces)
        blocks[index]["input"] = json.loads(joined) if joined.strip() else {}
    return message | {"content": [blocks[index] for index in sorted(blocks)]}


def _openai_message(text: str) -> str:
    """The message of an OpenAI-style error body (``{"error": {"message": ...}}``), as litellm's
    OpenAI client reports it; the body itself when it has none."""
    try:
        body: Any = json.loads(text)
    except ValueError:
        return text
    error: Any = cast(dict[str, Any], body).get("error") if isinstance(body, dict) else None
    message: Any = cast(dict[str, Any], error).get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else text
