"""What the scripted model server needs to speak Anthropic's Messages API and to play a provider's
prompt cache: a request's messages and tools in OpenAI's format (what scripts read), and a
:class:`PromptCache` that counts the tokens a request reads from and writes to the cache.

The cache is played the way the providers describe theirs, without their minimum lengths or
lifetimes. A prompt is a sequence of blocks: each tool schema, then each system block, then each
message's content blocks (a message's text is one block). Anthropic (``explicit``) caches a prefix
only up to a block marked ``cache_control``: a request reads the longest prefix ending at or before
its last mark that an earlier request wrote, and writes the rest up to that mark. OpenAI
(automatic) caches every prefix of every request: a request reads the longest one seen before.
The marks themselves are no part of a prefix, so a prefix marked once and unmarked later is the
same prefix.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any, cast

from dispatch.hub.llm.types import JsonDict


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)  # the scripted model's estimate: about four characters a token


@dataclass(frozen=True)
class CacheUse:
    """A request's prompt tokens: ``total`` of them, ``read`` from the cache and ``written`` to it."""

    total: int
    read: int
    written: int

    @property
    def uncached(self) -> int:
        return self.total - self.read - self.written


def _unmarked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unmarked(v) for k, v in cast(JsonDict, value).items() if k != "cache_control"}
    if isinstance(value, list):
        return [_unmarked(v) for v in cast(list[Any], value)]
    return value


def _blocks(content: Any) -> list[Any]:
    return cast(list[Any], content) if isinstance(content, list) else [content]


def anthropic_blocks(body: JsonDict) -> list[tuple[str, bool]]:
    """A Messages API request as prompt blocks: each one's text and whether it is marked."""
    found: list[tuple[str, bool]] = []

    def add(where: str, block: Any) -> None:
        marked = isinstance(block, dict) and "cache_control" in block
        found.append((where + json.dumps(_unmarked(block), sort_keys=True), marked))

    for tool in cast(list[Any], body.get("tools") or []):
        add("tool:", tool)
    for block in _blocks(body.get("system") or []):
        add("system:", block)
    for message in cast(list[JsonDict], body.get("messages") or []):
        for block in _blocks(message.get("content")):
            add(f"{message.get('role')}:", block)
    return found


def openai_blocks(body: JsonDict) -> list[tuple[str, bool]]:
    """A chat completions request as prompt blocks (one per tool and per message), none marked."""
    tools = [("tool:" + json.dumps(t, sort_keys=True), False) for t in cast(list[Any], body.get("tools") or [])]
    messages = cast(list[Any], body.get("messages") or [])
    return tools + [("message:" + json.dumps(_unmarked(m), sort_keys=True), False) for m in messages]


class PromptCache:
    """The prefixes earlier requests wrote, and the cache use of the next."""

    def __init__(self) -> None:
        self._prefixes: set[str] = set()
        self._lock = threading.Lock()

    def use(self, blocks: list[tuple[str, bool]], *, explicit: bool) -> CacheUse:
        """How ``blocks`` use the cache (and what they leave in it): marked prefixes when
        ``explicit``, every prefix when not."""
        digest = hashlib.sha256()
        keys: list[str] = []
        for text, _ in blocks:
            digest.update(text.encode() + b"\0")
            keys.append(digest.hexdigest())
        counts = [_tokens(text) for text, _ in blocks]
        marks = [i for i, (_, marked) in enumerate(blocks) if marked] if explicit else list(range(len(blocks)))
        limit = marks[-1] if marks else -1
        with self._lock:
            hit = max((i for i in range(limit + 1) if keys[i] in self._prefixes), default=-1)
            self._prefixes.update(keys[i] for i in marks)
        read = sum(counts[: hit + 1])
        written = sum(counts[hit + 1 : limit + 1]) if explicit else 0
        return CacheUse(total=sum(counts), read=read, written=written)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = [cast(JsonDict, b) for b in _blocks(content) if isinstance(b, dict)]
    return "".join(str(b.get("text", "")) for b in parts if b.get("type") == "text")


def openai_request(body: JsonDict) -> tuple[list[JsonDict], list[JsonDict]]:
    """A Messages API request's messages and tools in OpenAI's format: the system prompt a system
    message, tool results tool messages, tool uses an assistant message's tool calls."""
    messages: list[JsonDict] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text(body["system"])})
    for message in cast(list[JsonDict], body.get("messages") or []):
        content = message.get("content")
        blocks = [cast(JsonDict, b) for b in _blocks(content) if isinstance(b, dict)]
        if message.get("role") == "assistant":
            calls = [
                {
                    "id": b.get("id"),
                    "type": "function",
                    "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input") or {})},
                }
                for b in blocks
                if b.get("type") == "tool_use"
            ]
            said: JsonDict = {"role": "assistant", "content": _text(content) or None}
            messages.append(said | ({"tool_calls": calls} if calls else {}))
            continue
        for block in blocks:
            if block.get("type") == "tool_result":
                result = {"role": "tool", "tool_call_id": block.get("tool_use_id")}
                messages.append(result | {"content": _text(block.get("content"))})
        text = _text(content)
        if text:
            messages.append({"role": "user", "content": text})
    tools = [
        {
            "type": "function",
            "function": {
                "name": t.get("name"),
                "description": t.get("description", ""),
                "parameters": t.get("input_schema") or {},
            },
        }
        for t in cast(list[JsonDict], body.get("tools") or [])
    ]
    return messages, tools
