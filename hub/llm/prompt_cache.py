"""Prompt-cache breakpoints for the providers that cache only where a request says so.

Anthropic's models (on Anthropic, and on Bedrock, Vertex AI, Azure AI and OpenRouter, where
litellm carries the marks over) cache a prompt's prefix only up to a ``cache_control``
breakpoint, at most four per request. Every request to such a model gets four
(:func:`with_breakpoints`):

* the last tool schema: the tools, the same for every agent of one template;
* the last system message: tools and system prompt, shared by the siblings of one template;
* the last message: this step's whole prompt, which the next step of the agent starts with;
* the last message before the latest assistant message: the previous step's whole prompt, so the
  next step finds it even when this step added more blocks than the provider looks back over.

The transcript is never changed: the marked messages and tool are copies. A message whose
content is a list of blocks is marked on its last block, any other on the message itself
(litellm moves the mark where each provider wants it). Providers that cache by themselves
(OpenAI, DeepSeek, Gemini's implicit cache) get the request as it was.

litellm's own ``cache_control_injection_points`` would do the marking too, but it runs as a
prompt-management hook of litellm's per-call logging object, deep-copies the messages and walks
them in two thousand lines of rules on every call; the marks here cost four shallow copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, cast

from dispatch.hub.llm.types import JsonDict

BREAKPOINT: JsonDict = {"type": "ephemeral"}
"""The mark itself: Anthropic's default cache lifetime (five minutes, renewed by every hit)."""

_CLAUDE_HOSTS = ("bedrock", "vertex_ai", "azure_ai", "openrouter")


@cache
def needs_breakpoints(model: str) -> bool:
    """Whether calls to ``model`` (a litellm model name, ``provider/name``) need breakpoints to be
    cached: any model of the ``anthropic`` provider, and Claude models on the providers that host
    them."""
    provider, _, name = model.partition("/")
    if provider == "anthropic":
        return True
    return provider in _CLAUDE_HOSTS and ("claude" in name.lower() or name.startswith("anthropic"))


def _marked(message: JsonDict) -> JsonDict:
    content = message.get("content")
    if isinstance(content, list) and content and isinstance(content[-1], dict):
        blocks = list(cast(list[Any], content))
        blocks[-1] = {**cast(JsonDict, blocks[-1]), "cache_control": BREAKPOINT}
        return {**message, "content": blocks}
    return {**message, "cache_control": BREAKPOINT}


def _turn_marks(messages: Sequence[JsonDict]) -> set[int]:
    """The indexes of the last message and of the last one before the latest assistant message."""
    if not messages:
        return set()
    last = len(messages) - 1
    marks = {last}
    latest_assistant = next((i for i in range(last, -1, -1) if messages[i].get("role") == "assistant"), None)
    if latest_assistant is not None and latest_assistant > 0:
        marks.add(latest_assistant - 1)
    return marks


def with_breakpoints(messages: Sequence[JsonDict], tools: Sequence[JsonDict]) -> tuple[list[JsonDict], list[JsonDict]]:
    """The messages and tools of a request, with the breakpoints described above."""
    systems = [i for i, m in enumerate(messages) if m.get("role") == "system"]
    marks = _turn_marks(messages) | set(systems[-1:])
    marked = [_marked(m) if i in marks else m for i, m in enumerate(messages)]
    schemas = list(tools)
    if schemas:
        schemas[-1] = {**schemas[-1], "cache_control": BREAKPOINT}
    return marked, schemas
