"""Web search for the ``web`` server, through a provider the user configures, and the ``web``
section of the config.

Providers need only an API key: ``brave`` (Brave Search API) and ``tavily`` (Tavily). The key
usually comes from the environment through ``${ENV}`` in the config file; ``base_url`` points a
provider elsewhere (a proxy, or a local fake in tests). The provider is the user's choice, so its
address is not put through the agent's web grants (see :mod:`.fetch` for pages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from .policy import normalize_network

__all__ = ["DEFAULT_BASE_URLS", "SearchConfig", "SearchError", "SearchHit", "WebConfig", "run_search"]

Provider = Literal["brave", "tavily"]
DEFAULT_BASE_URLS: dict[str, str] = {"brave": "https://api.search.brave.com", "tavily": "https://api.tavily.com"}
SEARCH_TIMEOUT_S = 30.0


class SearchConfig(BaseModel):
    """The search provider the ``web`` server's ``search`` tool uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Provider = Field(description="brave (Brave Search API) or tavily")
    api_key: SecretStr = Field(description="the provider's API key; write it as ${ENV_VAR}, not in the file")
    base_url: str | None = Field(
        default=None,
        description="the provider's API address; default: its public one (https://api.search.brave.com, ...)",
    )
    max_results: int = Field(default=5, ge=1, le=20, description="results per search (at most 20)")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value.rstrip("/") if value else value

    def endpoint(self) -> str:
        return self.base_url or DEFAULT_BASE_URLS[self.provider]


class WebConfig(BaseModel):
    """The config's ``web`` section: the search provider, and private addresses for the top agent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    search: SearchConfig | None = Field(default=None, description="the provider of the search tool; none: no search")
    allow_private: bool | list[str] = Field(
        default=False,
        description="give the top agent the web_private grant: true (loopback, private and link-local addresses), "
        "or a list of addresses and networks (127.0.0.1, 10.0.0.0/8); children get it only when summoned with it",
    )

    @field_validator("allow_private")
    @classmethod
    def _networks(cls, value: bool | list[str]) -> bool | list[str]:
        return value if isinstance(value, bool) else [normalize_network(v) for v in value]


class SearchError(Exception):
    """A search that failed; the message names the provider and what went wrong."""


@dataclass(frozen=True)
class SearchHit:
    title: str
    url: str
    snippet: str


def _brave_request(config: SearchConfig, query: str, count: int) -> httpx.Request:
    return httpx.Request(
        "GET",
        f"{config.endpoint()}/res/v1/web/search",
        params={"q": query, "count": count},
        headers={"Accept": "application/json", "X-Subscription-Token": config.api_key.get_secret_value()},
    )


def _tavily_request(config: SearchConfig, query: str, count: int) -> httpx.Request:
    return httpx.Request(
        "POST",
        f"{config.endpoint()}/search",
        json={"query": query, "max_results": count},
        headers={"Authorization": f"Bearer {config.api_key.get_secret_value()}"},
    )


def _hits(provider: str, data: Any) -> list[SearchHit]:
    if not isinstance(data, dict):
        raise SearchError(f"{provider}: the answer is not a JSON object")
    body = cast(dict[str, Any], data)
    if provider == "brave":
        web: Any = body.get("web") or {}
        results: Any = cast(dict[str, Any], web).get("results", []) if isinstance(web, dict) else []
        snippet_key = "description"
    else:
        results = body.get("results", [])
        snippet_key = "content"
    if not isinstance(results, list):
        raise SearchError(f"{provider}: the answer has no list of results")
    hits: list[SearchHit] = []
    for item in cast(list[Any], results):
        if isinstance(item, dict):
            entry = cast(dict[str, Any], item)
            hits.append(
                SearchHit(str(entry.get("title", "")), str(entry.get("url", "")), str(entry.get(snippet_key, "")))
            )
    return hits


async def run_search(config: SearchConfig, query: str, count: int | None = None) -> list[SearchHit]:
    """Ask the configured provider; raises :class:`SearchError` naming the provider and the cause."""
    count = min(count or config.max_results, 20)
    build = _brave_request if config.provider == "brave" else _tavily_request
    request = build(config, query, count)
    try:
        async with httpx.AsyncClient(timeout=SEARCH_TIMEOUT_S) as client:
            response = await client.send(request)
    except httpx.HTTPError as error:
        raise SearchError(f"{config.provider} at {config.endpoint()}: {error or type(error).__name__}") from error
    if response.status_code != 200:
        detail = " ".join(response.text.split())[:300]
        hint = " (check web.search.api_key in the config)" if response.status_code in (401, 403) else ""
        raise SearchError(f"{config.provider}: HTTP {response.status_code}{hint}: {detail}")
    try:
        data: Any = response.json()
    except ValueError as error:
        raise SearchError(f"{config.provider}: the answer is not JSON") from error
    return _hits(config.provider, data)
