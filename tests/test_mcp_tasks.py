"""The hub's MCP face beyond its tools, through real MCP client sessions: ``logging/setLevel`` on
``/mcp`` and through ``dispatch mcp`` (MCP's conformance scenario ``logging-set-level``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import EmptyResult, SetLevelRequest, SetLevelRequestParams

from tests.api_helpers import MODEL, ServedHub
from tests.fakes.scripted_llm import ScriptedLLM

pytestmark = pytest.mark.anyio


def legacy_http(served: ServedHub) -> Client:
    """A client of ``/mcp`` that opens with the initialize handshake, as the conformance suite does."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {served.token}"}, timeout=30)
    return Client(streamable_http_client(url=served.base_url + "/mcp", http_client=http), mode="legacy")


async def set_level(client: Client) -> EmptyResult:
    request = SetLevelRequest(params=SetLevelRequestParams(level="debug"))
    return await client.session.send_request(request, EmptyResult)


async def test_set_level_is_answered_on_the_hubs_mcp_endpoint(scripted_llm: ScriptedLLM, served: ServedHub) -> None:
    async with legacy_http(served) as client:
        assert client.server_capabilities.logging is not None
        assert await set_level(client) == EmptyResult()
        assert {t.name for t in (await client.list_tools()).tools} >= {"start", "wait"}


async def test_set_level_is_answered_through_dispatch_mcp(
    scripted_llm: ScriptedLLM, served: ServedHub, project: Path
) -> None:
    args = ["-m", "dispatch.hub.cli", "mcp", "--root", str(project), "--model", MODEL]
    stdio = StdioServerParameters(command=sys.executable, args=args, env=dict(os.environ))
    async with Client(stdio, mode="legacy") as client:
        assert client.server_capabilities.logging is not None
        assert await set_level(client) == EmptyResult()
