"""Fetching one page for the ``web`` server, safe against server-side request forgery.

- Only ``http`` and ``https`` URLs; the host must pass the agent's allow-list
  (:class:`~dispatch.servers.web.policy.WebPolicy`).
- The address check lives in the connection itself: :class:`GuardedBackend` resolves the host,
  refuses when *any* resolved address is loopback, private, link-local or otherwise not public
  (unless the ``web_private`` grant covers it), and then connects to the very address it checked,
  so a DNS answer that changes between check and connect (DNS rebinding) cannot slip through.
  TLS still verifies the certificate against the host name.
- Redirects are followed here, one hop at a time (at most :data:`MAX_REDIRECTS`), each hop
  checked again like the first URL. Proxies from the environment are ignored.
- The body is streamed and reading stops at ``max_bytes`` (decoded), so a huge page costs no more
  than the cap.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import httpcore
import httpx

from .policy import WebPolicy, address_refusal

__all__ = ["MAX_REDIRECTS", "FetchError", "GuardedBackend", "Page", "WebRefusal", "fetch_page"]

MAX_REDIRECTS = 5
USER_AGENT = "Dispatch-web/0.1 (an AI agent's fetch tool)"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HTTPCORE_TIMEOUTS = (httpcore.TimeoutException,)
_HTTPCORE_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, httpcore.ProxyError)


class FetchError(Exception):
    """A fetch that could not complete (bad URL, network failure, too many redirects); the message
    names the URL."""


class WebRefusal(FetchError):
    """A URL or address the agent's grants do not allow; the message names it and the grant."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that connects only to addresses the policy allows, the ones it checked."""

    def __init__(self, policy: WebPolicy) -> None:
        self.policy = policy
        self._inner = cast(httpcore.AsyncNetworkBackend, httpcore.AnyIOBackend())

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  # httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as error:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {error}") from error
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            refusal = address_refusal(address, self.policy.private)
            if refusal is not None:
                raise WebRefusal(refusal if host == address else f"{host} resolves to {refusal}")
        last: Exception = httpcore.ConnectError(f"{host!r} resolves to no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as error:
                last = error
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109  # httpcore's signature
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise WebRefusal(f"unix socket {path!r}: only TCP connections are made")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._response.aiter_stream():
                yield part
        except _HTTPCORE_TIMEOUTS as error:
            raise httpx.TimeoutException(str(error)) from error
        except _HTTPCORE_ERRORS as error:
            raise httpx.TransportError(str(error)) from error

    async def aclose(self) -> None:
        await self._response.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """httpx's transport over an httpcore pool whose every connection goes through
    :class:`GuardedBackend`."""

    def __init__(self, policy: WebPolicy, ssl_context: ssl.SSLContext | None = None) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_keepalive_connections=0,
            network_backend=GuardedBackend(policy),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream if isinstance(request.stream, httpx.AsyncByteStream) else None,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core)
        except _HTTPCORE_TIMEOUTS as error:
            raise httpx.TimeoutException(str(error)) from error
        except _HTTPCORE_ERRORS as error:
            raise httpx.TransportError(str(error)) from error
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response),
            extensions=cast(dict[str, Any], response.extensions),
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


@dataclass
class Page:
    """What a fetch brought back: the final URL, the status, the content type and the first bytes."""

    url: str
    status: int
    reason: str
    content_type: str
    encoding: str
    body: bytes
    truncated: bool
    """Whether reading stopped at the cap (more followed)."""
    redirects: list[str] = field(default_factory=list[str])
    """The URLs before ``url``, in order."""


def check_url(url: httpx.URL, policy: WebPolicy) -> None:
    """Raise :class:`WebRefusal` for a scheme other than http(s) or a host outside the allow-list."""
    if url.scheme not in ("http", "https"):
        raise WebRefusal(f"refused {url}: only http and https URLs can be fetched, not {url.scheme or 'none'}:")
    if not url.host:
        raise WebRefusal(f"refused {url}: the URL has no host")
    refusal = policy.host_refusal(url.host)
    if refusal is not None:
        raise WebRefusal(f"refused {url}: {refusal}")


def parse_url(raw: str) -> httpx.URL:
    try:
        return httpx.URL(raw.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as error:
        raise FetchError(f"{raw!r} is not a URL: {error}") from error


async def _read_capped(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            return b"".join(chunks)[:max_bytes], True
    return b"".join(chunks), False


async def fetch_page(raw_url: str, policy: WebPolicy, *, max_bytes: int, timeout_s: float) -> Page:
    """GET ``raw_url`` under ``policy``, following redirects (each hop checked), reading at most
    ``max_bytes`` of the body. Raises :class:`WebRefusal` or :class:`FetchError`, naming the URL."""
    url = parse_url(raw_url)
    visited: list[str] = []
    headers = {"User-Agent": USER_AGENT, "Accept": "text/html, text/*;q=0.9, */*;q=0.5"}
    async with httpx.AsyncClient(
        transport=GuardedTransport(policy), trust_env=False, follow_redirects=False, timeout=timeout_s
    ) as client:
        while True:
            check_url(url, policy)
            try:
                async with client.stream("GET", url, headers=headers) as response:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECTS and location:
                        visited.append(str(url))
                        if len(visited) > MAX_REDIRECTS:
                            raise FetchError(f"{raw_url}: more than {MAX_REDIRECTS} redirects (last to {location})")
                        url = url.join(location)
                        continue
                    body, truncated = await _read_capped(response, max_bytes)
                    return Page(
                        url=str(url),
                        status=response.status_code,
                        reason=response.reason_phrase,
                        content_type=response.headers.get("content-type", ""),
                        encoding=response.encoding or "utf-8",
                        body=body,
                        truncated=truncated,
                        redirects=visited,
                    )
            except WebRefusal as refusal:
                raise WebRefusal(f"refused {url}: {refusal}") from None
            except httpx.TimeoutException as error:
                raise FetchError(f"{url}: timed out after {timeout_s:g} s") from error
            except (httpx.HTTPError, httpx.InvalidURL) as error:
                raise FetchError(f"{url}: {error or type(error).__name__}") from error
