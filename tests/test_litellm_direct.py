"""The direct path of a model call (``dispatch.hub.llm.litellm_direct``): for OpenAI-compatible and
Anthropic endpoints, litellm's provider transformation without ``litellm.acompletion`` sends the
same request and reads the same answer, usage and tool calls, and every failure is classified and
worded as through ``litellm.acompletion``, against the scripted model server's two faces (one
server per path, so each path meets a fresh prompt cache)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import trustme

from dispatch.hub.llm.litellm_call import acompletion, load_litellm
from dispatch.hub.llm.litellm_direct import EncodedMessages, direct_route, forget_environment, plain_answer
from dispatch.hub.llm.model_worker import CallFailed, failed_call
from dispatch.hub.llm.scripted import Fail, Reply, ToolCall
from dispatch.hub.llm.types import Completion, JsonDict
from tests.fakes.scripted_llm import ScriptedLLM

TOOLS: list[JsonDict] = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    }
]


@dataclass(frozen=True)
class Face:
    model: str
    base: str


def _face(llm: ScriptedLLM, provider: str) -> Face:
    if provider == "anthropic":
        return Face("anthropic/claude-sonnet-4-5", llm.anthropic_base_url)
    return Face("openai/gpt-4o-mini", llm.base_url)


def _transcript(tag: str) -> list[JsonDict]:
    call = {"id": "call-1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}
    return [
        {"role": "system", "content": "You are careful."},
        {"role": "user", "content": f"{tag} review a.py"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call-1", "content": "x = 1\n"},
    ]


async def _call(face: Face, *, direct: bool, base: str | None = None) -> Completion:
    return await acompletion(
        load_litellm(), face.model, _transcript("[go]"), TOOLS, 30.0, "sk-test", base or face.base, None, direct=direct
    )


async def _failure(face: Face, *, direct: bool, base: str | None = None) -> CallFailed:
    try:
        await _call(face, direct=direct, base=base)
    except Exception as error:  # the worker's own handling of a failed call
        return failed_call(error, face.model, base or face.base)
    raise AssertionError("the call did not fail")


Servers = Callable[[], ScriptedLLM]


def test_openai_and_anthropic_models_with_a_key_go_direct_and_others_through_acompletion() -> None:
    litellm = load_litellm()
    assert direct_route(litellm, "openai/gpt-4o-mini", "sk-x", None) is not None
    assert direct_route(litellm, "anthropic/claude-sonnet-4-5", "sk-x", {"max_tokens": 5}) is not None
    assert direct_route(litellm, "gpt-4o-mini", "sk-x", None) is None  # provider left to litellm's inference
    assert direct_route(litellm, "gemini/gemini-2.0-flash", "sk-x", None) is None
    assert direct_route(litellm, "openai/gpt-4o-mini", "sk-x", {"response_format": {"type": "json"}}) is None


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_both_paths_send_the_same_request_and_read_the_same_answer(scripted_llms: Servers, provider: str) -> None:
    answer = Reply(text="reading b.py next", tool_calls=[ToolCall("read_file", {"path": "b.py"})])
    direct_server, through_server = scripted_llms(), scripted_llms()
    for server in (direct_server, through_server):
        server.script("[go]", [answer])

    direct = await _call(_face(direct_server, provider), direct=True)
    through = await _call(_face(through_server, provider), direct=False)

    assert direct.text == through.text == "reading b.py next"
    assert [(c.name, c.arguments) for c in direct.tool_calls] == [(c.name, c.arguments) for c in through.tool_calls]
    assert [c.name for c in direct.tool_calls] == ["read_file"]
    assert direct.usage == through.usage
    assert direct.usage.prompt_tokens > 0 and direct.usage.completion_tokens > 0
    if provider == "anthropic":
        assert direct.usage.cache_write_tokens > 0  # the breakpoints went along
    (sent_direct,) = direct_server.requests
    (sent_through,) = through_server.requests
    assert sent_direct.body == sent_through.body
    for header in ("authorization", "x-api-key", "anthropic-version", "content-type"):
        assert sent_direct.headers.get(header) == sent_through.headers.get(header)


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("fail", "kind"),
    [
        (Fail.auth(), "auth"),
        (Fail.rate_limit(7), "rate_limit"),
        (Fail.quota(), "quota"),
        (Fail.context_too_long(1000, 5000), "context"),
        (Fail.unavailable(), "transient"),
        (Fail(404, {"error": {"message": "The model does not exist", "code": "model_not_found"}}), "fatal"),
    ],
)
async def test_both_paths_classify_and_word_a_failure_alike(
    scripted_llms: Servers, provider: str, fail: Fail, kind: str
) -> None:
    direct_server, through_server = scripted_llms(), scripted_llms()
    for server in (direct_server, through_server):
        server.script("[go]", [fail])

    direct = await _failure(_face(direct_server, provider), direct=True)
    through = await _failure(_face(through_server, provider), direct=False)

    assert direct.kind == through.kind == kind
    assert direct.message == through.message
    assert direct.user_error is through.user_error is False
    if kind == "rate_limit":
        assert direct.headers.get("retry-after") == through.headers.get("retry-after") == "7"


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_both_paths_name_an_unreachable_endpoint_alike(scripted_llm: ScriptedLLM, provider: str) -> None:
    face = _face(scripted_llm, provider)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}" + ("/v1" if provider == "openai" else "")
    direct = await _failure(face, direct=True, base=nowhere)
    through = await _failure(face, direct=False, base=nowhere)

    assert direct.kind == through.kind == "unreachable"
    assert nowhere in direct.message and nowhere in through.message


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_an_endpoint_that_hangs_up_is_named_and_no_http_status_is_made_up(provider: str) -> None:
    """An endpoint (or a proxy before it) that closes the connection without an answer: no HTTP
    status came back, and the user reads neither one nor a class name."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async with _Relay(hang_up) as endpoint:
        base = f"http://127.0.0.1:{endpoint.port}" + ("/v1" if provider == "openai" else "")
        face = Face("openai/gpt-4o-mini" if provider == "openai" else "anthropic/claude-sonnet-4-5", base)
        direct = await _failure(face, direct=True)
        through = await _failure(face, direct=False)

    assert direct.kind == "transient"  # reached once: worth another try
    said = f"model {face.model!r}: the connection to {base} failed before an answer came (Server disconnected"
    assert direct.message.startswith(said)
    for failed in (direct, through):
        assert base in failed.message and "HTTP" not in failed.message and "litellm" not in failed.message


@pytest.mark.anyio
async def test_a_model_name_litellm_does_not_know_is_the_users_mistake_either_way() -> None:
    litellm = load_litellm()
    for direct in (True, False):
        try:
            await acompletion(litellm, "no-such-model", _transcript("x"), [], 5.0, "sk", None, None, direct=direct)
        except Exception as error:
            failed = failed_call(error, "no-such-model")
            assert failed.user_error and failed.kind == "fatal"
            assert failed.message.startswith("unknown model 'no-such-model'")
        else:
            raise AssertionError("the call did not fail")


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_both_paths_report_a_slow_answer_as_no_answer_in_time(scripted_llms: Servers, provider: str) -> None:
    found: list[CallFailed] = []
    for direct in (True, False):
        server = scripted_llms()
        server.script("[go]", [Reply(text="too late", delay_s=3.0)])
        face = _face(server, provider)
        try:
            await acompletion(
                load_litellm(), face.model, _transcript("[go]"), TOOLS, 0.5, "sk-test", face.base, None, direct=direct
            )
        except Exception as error:
            found.append(failed_call(error, face.model, face.base))
        else:
            raise AssertionError("the call did not fail")
    assert [failed.kind for failed in found] == ["transient", "transient"]
    assert all(": no answer in time (" in failed.message for failed in found)
    assert "no answer within 0.5 s" in found[0].message


@pytest.mark.anyio
async def test_a_threads_calls_encode_only_their_new_messages_and_send_what_litellm_sends(
    scripted_llms: Servers,
) -> None:
    direct_server, through_server = scripted_llms(), scripted_llms()
    for server in (direct_server, through_server):
        server.script("[thread]", [Reply(text=f"answer {n}") for n in range(6)])
    face, through_face = _face(direct_server, "openai"), _face(through_server, "openai")
    known = EncodedMessages()
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    call = {"id": "call-2", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "b.py"}'}}
    history = _transcript("[thread]")
    steps: list[list[JsonDict]] = [
        [],  # the first call: everything is new
        [{"role": "assistant", "content": "noted", "name": None}, {"role": "user", "content": "go on"}],
        [{"role": "user", "content": [{"type": "text", "text": "and this?"}, image]}],  # not plain: whole
        [{"role": "assistant", "content": "a picture"}],
    ]
    encoded: list[list[bytes]] = []

    async def send_both(history: list[JsonDict]) -> None:
        for server_face, kept in ((face, known), (through_face, None)):
            await acompletion(
                load_litellm(), server_face.model, list(history), TOOLS, 30.0, "sk-test", server_face.base, None,
                direct=kept is not None, known=kept,
            )  # fmt: skip
        encoded.append(list(known.fragments))

    for added in steps:
        history = [*history, *added]
        await send_both(history)
    # compacted: the same thread's transcript replaced by a shorter one, then growing again
    history = [history[0], {"role": "user", "content": "[thread] summary of the work so far"}]
    for added in ([], [{"role": "assistant", "content": None, "tool_calls": [call]}]):
        history = [*history, *added]
        await send_both(history)

    sent_direct, sent_through = direct_server.requests, through_server.requests
    assert len(sent_direct) == len(sent_through) == 6
    for direct, through in zip(sent_direct, sent_through, strict=True):
        assert direct.body == through.body
    first, second = encoded[0], encoded[1]
    assert len(first) == 4 and len(second) == 6
    assert all(a is b for a, b in zip(first, second[:4], strict=True))  # encoded once, reused
    assert encoded[2] == encoded[3] == []  # an image in the thread: sent whole
    assert len(encoded[4]) == 2 and len(encoded[5]) == 3 and encoded[5][0] is encoded[4][0]


@pytest.mark.anyio
async def test_a_threads_next_call_with_other_tools_parameters_or_key_sends_those(scripted_llms: Servers) -> None:
    direct_server, through_server = scripted_llms(), scripted_llms()
    for server in (direct_server, through_server):
        server.script("[head]", [Reply(text=f"answer {n}") for n in range(5)])
    face, through_face = _face(direct_server, "openai"), _face(through_server, "openai")
    known = EncodedMessages()
    grep = {
        "type": "function",
        "function": {"name": "grep", "description": "Search.", "parameters": {"type": "object"}},
    }
    more_tools = [*TOOLS, grep]
    calls: list[tuple[list[JsonDict], JsonDict | None, str]] = [
        (TOOLS, None, "sk-test"),
        (more_tools, None, "sk-test"),  # a server mounted meanwhile
        (more_tools, {"max_tokens": 50}, "sk-test"),
        (more_tools, {"max_tokens": 50}, "sk-other"),  # another key of the tag
        (more_tools, {"max_tokens": 50}, "sk-other"),
    ]
    history = _transcript("[head]")
    for n, (tools, extra, key) in enumerate(calls):
        history = [*history, {"role": "user", "content": f"step {n}"}]
        for server_face, kept in ((face, known), (through_face, None)):
            await acompletion(
                load_litellm(), server_face.model, list(history), [dict(t) for t in tools], 30.0, key,
                server_face.base, None if extra is None else dict(extra), direct=kept is not None, known=kept,
            )  # fmt: skip

    sent_direct, sent_through = direct_server.requests, through_server.requests
    assert len(sent_direct) == len(sent_through) == 5
    for direct, through in zip(sent_direct, sent_through, strict=True):
        assert direct.body == through.body
        assert direct.headers.get("authorization") == through.headers.get("authorization")
    assert [len(cast(list[JsonDict], r.body["tools"])) for r in sent_direct] == [1, 2, 2, 2, 2]
    assert [r.body.get("max_tokens") for r in sent_direct] == [None, None, 50, 50, 50]
    assert [r.headers.get("authorization") for r in sent_direct][2:] == [
        "Bearer sk-test",
        "Bearer sk-other",
        "Bearer sk-other",
    ]


class _Proxy:
    """A forwarding HTTP proxy on a free port: each request it is handed (absolute-form, as a
    client sends through a proxy) is recorded and passed on to its origin, one per connection."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, _, rest = head.partition(b"\r\n")
        method, target, version = line.decode().split(" ")
        self.seen.append(f"{method} {target}")
        length = next(
            (int(h.split(b":")[1]) for h in rest.split(b"\r\n") if h.lower().startswith(b"content-length")), 0
        )
        body = await reader.readexactly(length)
        origin = urllib.parse.urlsplit(target)
        upstream_reader, upstream = await asyncio.open_connection(origin.hostname, origin.port)
        kept = [h for h in rest.split(b"\r\n") if h and not h.lower().startswith((b"connection", b"proxy-"))]
        upstream.write(
            b"\r\n".join([f"{method} {origin.path} {version}".encode(), *kept, b"Connection: close", b"", b""])
        )
        upstream.write(body)
        writer.write(await upstream_reader.read())  # the origin's whole answer, until it closes
        await writer.drain()
        upstream.close()
        writer.close()


@pytest.mark.anyio
async def test_a_direct_call_goes_through_the_proxy_the_environment_names_unless_no_proxy_covers_it(
    scripted_llms: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = scripted_llms()
    server.script("[proxied]", [Reply(text="through the proxy"), Reply(text="straight")])
    face = _face(server, "openai")
    async with _Proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        forget_environment()  # as the worker does when the hub's environment changes
        answer = await acompletion(
            load_litellm(), face.model, _transcript("[proxied]"), TOOLS, 30.0, "sk-test", face.base, None
        )
        assert answer.text == "through the proxy"
        assert proxy.seen == [f"POST {face.base}/chat/completions"]

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        forget_environment()
        answer = await acompletion(
            load_litellm(), face.model, [*_transcript("[proxied]"), {"role": "user", "content": "again"}], TOOLS,
            30.0, "sk-test", face.base, None,
        )  # fmt: skip
        assert answer.text == "straight"
        assert len(proxy.seen) == 1  # the second went straight to the model
    monkeypatch.delenv("HTTP_PROXY")
    forget_environment()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes from ``reader`` to ``writer`` until the reader's end closes, then the writer's."""
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _both_ways(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int) -> None:
    """A connection's bytes relayed to ``host:port`` and that end's back, until both ends close."""
    upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
    await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


_Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _Relay:
    """A TCP server on a free port whose every connection is served by ``serve`` (``ssl=``: over TLS)."""

    def __init__(self, serve: _Serve, **tls: Any) -> None:
        self._serve = serve
        self._tls = tls
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _Relay:
        self._server = await asyncio.start_server(self._served, "127.0.0.1", 0, **self._tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _served(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:  # the test's loop closing under a connection still open
            writer.close()


@dataclass
class _BehindAProxy:
    """A model reached over HTTPS through a proxy: its base URL, the authority that signed its
    certificate (a company's own, which no public bundle has) and the tunnels the proxy opened."""

    base: str
    authority: Path
    tunnels: list[str]


@contextlib.asynccontextmanager
async def _behind_a_proxy(
    server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch, directory: Path
) -> AsyncGenerator[_BehindAProxy]:
    """``server`` behind a TLS front whose certificate a new authority signed, and a proxy that
    opens a tunnel (``CONNECT``) to it, named by ``HTTPS_PROXY``."""
    model_port = urllib.parse.urlsplit(server.base_url).port
    assert model_port is not None
    authority = trustme.CA()
    authority_file = directory / "authority.pem"
    authority.cert_pem.write_to_path(str(authority_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    tunnels: list[str] = []

    async def tls_front(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _both_ways(reader, writer, "127.0.0.1", model_port)  # TLS ends here; the model speaks HTTP

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.partition(b"\r\n")[0].decode().split(" ")
        tunnels.append(f"{method} {target}")
        host, _, port = target.rpartition(":")
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _both_ways(reader, writer, host, int(port))

    async with _Relay(tls_front, ssl=context) as front, _Relay(tunnel) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        for name in ("NO_PROXY", "no_proxy", "SSL_VERIFY", "SSL_CERT_FILE"):
            monkeypatch.delenv(name, raising=False)
        forget_environment()  # as the worker does when the hub's environment changes
        try:
            yield _BehindAProxy(f"https://127.0.0.1:{front.port}/v1", authority_file, tunnels)
        finally:
            monkeypatch.delenv("HTTPS_PROXY")
            forget_environment()


@pytest.mark.anyio
async def test_an_https_call_tunnels_through_the_proxy_and_trusts_the_authority_the_environment_names(
    scripted_llms: Servers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Behind a company's proxy: ``HTTPS_PROXY`` is asked to open a tunnel (``CONNECT``) to the
    model's host, and the model's certificate is checked against the authority ``SSL_CERT_FILE``
    names."""
    server = scripted_llms()
    server.script("[tunnelled]", [Reply(text="through the tunnel")])
    async with _behind_a_proxy(server, monkeypatch, tmp_path) as proxied:
        monkeypatch.setenv("SSL_CERT_FILE", str(proxied.authority))
        answer = await acompletion(
            load_litellm(), "openai/gpt-4o-mini", _transcript("[tunnelled]"), TOOLS, 30.0, "sk-test", proxied.base, None
        )
        assert answer.text == "through the tunnel"
        assert proxied.tunnels == [f"CONNECT {proxied.base.split('/')[2]}"]


@pytest.mark.anyio
async def test_a_certificate_nobody_trusts_fails_the_call_saying_so_and_what_to_set(
    scripted_llms: Servers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without ``SSL_CERT_FILE`` the company's certificate is not trusted: the call fails at once
    with a sentence saying which endpoint, why and what to set (no class names), and as an
    endpoint not reached, so the router moves on rather than retrying it."""
    server = scripted_llms()
    async with _behind_a_proxy(server, monkeypatch, tmp_path) as proxied:
        with pytest.raises(Exception) as raised:
            await acompletion(
                load_litellm(),
                "openai/gpt-4o-mini",
                _transcript("[untrusted]"),
                TOOLS,
                30.0,
                "sk-test",
                proxied.base,
                None,
            )
    failed = failed_call(raised.value, "openai/gpt-4o-mini", proxied.base)
    assert failed.kind == "unreachable"
    assert failed.message == (
        f"model 'openai/gpt-4o-mini': the certificate of {proxied.base} is not trusted (unable to get local issuer "
        "certificate); if a proxy of your network or your company signs it, set SSL_CERT_FILE to that authority's "
        "certificate (a PEM file)"
    )
    assert server.requests == []  # nothing was sent


class _Answering:
    """An OpenAI-compatible endpoint that answers every chat completion with one JSON body, as given."""

    def __init__(self) -> None:
        self.body: JsonDict = {}
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _Answering:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def base(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        body = json.dumps(self.body).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()


def _chat(message: JsonDict, usage: JsonDict | None) -> JsonDict:
    answer: JsonDict = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
    }  # fmt: skip
    return answer | ({"usage": usage} if usage is not None else {})


def _function(call_id: str, name: str, arguments: object) -> JsonDict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


USAGE: JsonDict = {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129}
PLAIN_ANSWERS: list[JsonDict] = [
    _chat({"content": "done"}, USAGE | {"prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 0}}),
    _chat({"content": "<think>which file first?</think>Reading a.py."}, USAGE),
    _chat({"content": "Reading a.py.", "reasoning_content": "which file first?"}, USAGE),
    _chat({"content": None, "tool_calls": [
        _function("c1", "read_file", '{"path": "a.py"}'), _function("c2", "list_dir", ""),
    ]}, USAGE),
    _chat({"content": "", "refusal": None, "annotations": []},
          USAGE | {"completion_tokens_details": {"reasoning_tokens": 0}}),
    _chat({"content": "no usage reported"}, None),
]  # fmt: skip
ODD_ANSWERS: list[JsonDict] = [
    _chat({"content": "cached, the DeepSeek way"}, USAGE | {"prompt_cache_hit_tokens": 100}),
    _chat({"content": None, "tool_calls": [_function("c1", "multi_tool_use.parallel", json.dumps({"tool_uses": [
        {"recipient_name": "functions.read_file", "parameters": {"path": "a.py"}},
        {"recipient_name": "functions.read_file", "parameters": {"path": "b.py"}},
    ]}))]}, USAGE),
]  # fmt: skip


@pytest.mark.anyio
async def test_an_openai_answer_read_from_its_json_is_what_litellm_reads_from_it() -> None:
    """The direct path reads a plain OpenAI answer's text, tool calls and usage itself; for every
    shape it takes that way, and for odd ones it leaves to litellm, the call's answer is the one
    ``litellm.acompletion`` gives for the same body."""
    face = Face("openai/gpt-4o-mini", "")
    async with _Answering() as endpoint:
        for answer in [*PLAIN_ANSWERS, *ODD_ANSWERS]:
            assert (plain_answer(json.dumps(answer).encode()) is not None) == (answer in PLAIN_ANSWERS), answer
            endpoint.body = answer
            direct = await _call(face, direct=True, base=endpoint.base)
            through = await _call(face, direct=False, base=endpoint.base)
            assert (direct.text, direct.tool_calls, direct.usage) == (through.text, through.tool_calls, through.usage)
    reasoned = plain_answer(json.dumps(PLAIN_ANSWERS[1]).encode())
    assert reasoned is not None and reasoned.text == "Reading a.py."  # litellm's split of the <think> part
    called = plain_answer(json.dumps(PLAIN_ANSWERS[3]).encode())
    assert called is not None and [(c.name, c.arguments) for c in called.tool_calls] == [
        ("read_file", '{"path": "a.py"}'),
        ("list_dir", "{}"),
    ]
