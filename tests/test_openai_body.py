"""The model worker sends plain chat bodies as they are, skipping the OpenAI SDK's transformation:
for every message shape an agent sends, the SDK's own transformation would have produced the very
same body (if an SDK upgrade changes that, this fails); what is not plain goes the SDK's way."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from openai import omit
from openai.types.chat import completion_create_params, completion_update_params
from pydantic import BaseModel

from dispatch.hub.llm.openai_body import plain_body, send_chat_bodies_as_given
from dispatch.hub.mounts.toolset import openai_tool
from dispatch.servers import inbox
from dispatch.servers.fs import server as fs

pytestmark = pytest.mark.anyio

CHAT = importlib.import_module("openai.resources.chat.completions.completions")


def _transcript() -> list[dict[str, Any]]:
    call = {"id": "call-1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}
    return [
        {"role": "system", "content": "You are an agent of Dispatch."},
        {"role": "user", "content": "Fix the tests."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call-1", "content": "def f():\n    return 1\n"},
        {"role": "user", "content": [{"type": "text", "text": "[message from the user] Mind the docs."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Image 1, returned by screenshot (tool call call-1):"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
            ],
        },
        {"role": "assistant", "content": "Done: 3 tests fixed."},
    ]


def _body(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    listed = [*fs.plan_server(tmp_path, []).listed(), *inbox.plan_server(_NoLink()).listed()]  # type: ignore[arg-type]
    body: dict[str, Any] = {"messages": _transcript(), "model": "gpt-test", "tools": [openai_tool(t) for t in listed]}
    body |= {"tool_choice": "auto", "temperature": 0.2, "max_tokens": 512, "stream": False, "user": omit}
    return body | extra


class _NoLink:
    """A link the inbox server's tools are bound to; listing them calls none of it."""


async def _sdk(body: dict[str, Any]) -> Any:
    return await CHAT.async_maybe_transform(body, completion_create_params.CompletionCreateParamsNonStreaming)


async def test_a_plain_body_is_what_the_sdk_would_have_sent(tmp_path: Path) -> None:
    for extra in ({}, {"response_format": {"type": "json_object"}, "reasoning_effort": "low", "seed": 7}):
        body = _body(tmp_path, **extra)
        assert plain_body(body) == await _sdk(body)
        assert "user" not in (plain_body(body) or {})  # an omitted value is left out, as the SDK does


async def test_what_is_not_plain_goes_the_sdks_way(tmp_path: Path) -> None:
    class Schema(BaseModel):
        answer: str

    assert plain_body(_body(tmp_path, metadata={"run": "x"})) is None  # a key outside the pinned ones
    assert plain_body(_body(tmp_path, messages=[Schema(answer="x")])) is None  # not JSON as it stands
    assert plain_body(["not", "a", "body"]) is None


async def test_the_worker_uses_the_passthrough_once_installed(tmp_path: Path) -> None:
    original = CHAT.async_maybe_transform
    try:
        send_chat_bodies_as_given()
        send_chat_bodies_as_given()  # idempotent: wrapped once
        installed = CHAT.async_maybe_transform
        assert installed is not original
        body = _body(tmp_path)
        sent = await installed(body, completion_create_params.CompletionCreateParamsNonStreaming)
        assert sent == await original(body, completion_create_params.CompletionCreateParamsNonStreaming)
        assert sent["messages"] is body["messages"]  # passed as it is, not walked and rebuilt
        other = {"metadata": {"a": "b"}}  # another request's body: the SDK's own way
        assert await installed(other, completion_update_params.CompletionUpdateParams) == other
    finally:
        CHAT.async_maybe_transform = original
