"""The model worker's one adjustment to the OpenAI SDK (which litellm's OpenAI-compatible calls go
through): a chat-completions request body that is plain JSON already is sent as it is, instead of
being walked by the SDK's type-driven transformation first.

That walk renames aliased keys and formats dates and files by the declared ``TypedDict`` types; a
chat request of Dispatch's has none of those, and the walk leaves it unchanged (pinned by
``tests/test_openai_body.py`` against the SDK itself, for every message shape an agent sends), yet
it costs the worker's CPU in proportion to the transcript: about 60 ms a call at 500 messages, most
of the worker's time (``python -m bench.model_calls``). litellm has an open change doing the same
(BerriAI/litellm#29769); until a release has it, :func:`send_chat_bodies_as_given` does it here.

A body is passed through only when it is plain JSON (``json.dumps`` takes it, at C speed) and all
of its keys are ones whose declared type has nothing to transform; anything else (an omitted
value, a pydantic object, a field with an alias or format) goes the SDK's way, unchanged.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

PLAIN_KEYS = frozenset(
    {
        "messages", "model", "tools", "tool_choice", "temperature", "top_p", "max_tokens",
        "max_completion_tokens", "stop", "stream", "stream_options", "n", "seed", "user",
        "parallel_tool_calls", "presence_penalty", "frequency_penalty", "response_format", "reasoning_effort",
    }
)  # fmt: skip
"""Request keys whose values the SDK's walk leaves as they are (pinned by the test)."""

_CHAT_MODULE = "openai.resources.chat.completions.completions"
_PASSED = "_dispatch_sends_plain_bodies"

Transform = Callable[[object, object], Awaitable[Any]]


def plain_body(data: object) -> dict[str, Any] | None:
    """``data`` without its omitted values, when it is a plain JSON chat body; None otherwise."""
    if not isinstance(data, dict):
        return None
    from openai._types import NotGiven, Omit  # the worker's, with litellm: not imported by the hub

    given = cast(dict[str, Any], data)
    body = {key: value for key, value in given.items() if not isinstance(value, (Omit, NotGiven))}
    if not set(body) <= PLAIN_KEYS:
        return None
    try:
        json.dumps(body)
    except (TypeError, ValueError):
        return None
    return body


def send_chat_bodies_as_given() -> None:
    """Let plain chat-completions bodies skip the SDK's transformation (idempotent)."""
    module = importlib.import_module(_CHAT_MODULE)
    original: Transform = module.async_maybe_transform
    if getattr(original, _PASSED, False):
        return
    params = importlib.import_module("openai.types.chat.completion_create_params")
    chat_types = (params.CompletionCreateParamsNonStreaming, params.CompletionCreateParamsStreaming)

    async def transform(data: object, expected_type: object) -> Any:
        if expected_type in chat_types and (body := plain_body(data)) is not None:
            return body
        return await original(data, expected_type)

    setattr(transform, _PASSED, True)
    setattr(module, "async_maybe_transform", transform)  # noqa: B010 (a module attribute pyright cannot see)
