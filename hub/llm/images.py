"""Images in a transcript: what a tool returned as an image reaches the model as an image part.

A tool result is text (OpenAI's ``tool`` message takes no image everywhere), so an image a tool
returned is said in the tool message (:func:`placeholder`) and sent right after the step's tool
messages in one ``user`` message of content parts (:func:`images_message`): a text part naming
the tool call, then the ``image_url`` part with the image as a ``data:`` URL. That is the
transcript's shape whatever the model, so an agent whose model changes keeps its images; a model
that does not accept images (litellm's ``supports_vision``, asked in the model worker) is sent a
short text in place of each image part instead (:func:`without_images`).

An image over :data:`MAX_IMAGE_BYTES` is described, never kept: the transcript is journaled
whole, and no provider takes an image that large anyway.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from dispatch.hub.llm.types import JsonDict

MAX_IMAGE_BYTES = 4 * 1024 * 1024
"""The largest image kept and sent (decoded); a larger one is described in the tool result instead."""

IMAGE_TOKENS = 1000
"""What an image part counts for in the hub's rough token estimate (not its base64's length)."""


@dataclass(frozen=True)
class ToolImage:
    """An image a tool returned: its MIME type and base64 data."""

    mime_type: str
    data: str

    @property
    def size(self) -> int:
        """Its size in bytes, decoded."""
        return len(self.data) * 3 // 4 - self.data[-2:].count("=")

    def url(self) -> str:
        return f"data:{self.mime_type};base64,{self.data}"


def size_text(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB" if size >= 1024 * 1024 else f"{max(1, round(size / 1024))} KB"


def placeholder(image: ToolImage) -> str:
    """What the tool message says of an image it returned."""
    if image.size > MAX_IMAGE_BYTES:
        what, limit = f"{image.mime_type}, {size_text(image.size)}", size_text(MAX_IMAGE_BYTES)
        return f"[image ({what}) not shown: images are sent up to {limit}]"
    return f"[image ({image.mime_type}, {size_text(image.size)}): in the message after the tool results]"


def kept(image: ToolImage) -> bool:
    """Whether ``image`` is sent (else its placeholder describes it)."""
    return image.size <= MAX_IMAGE_BYTES


def images_message(images: Sequence[tuple[str, str, ToolImage]]) -> JsonDict | None:
    """The ``user`` message carrying the images of one step's tool results, each as ``(tool name,
    tool call id, image)``; None when there are none to send."""
    parts: list[JsonDict] = []
    for number, (name, call_id, image) in enumerate((i for i in images if kept(i[2])), start=1):
        parts.append({"type": "text", "text": f"Image {number}, returned by {name} (tool call {call_id}):"})
        parts.append({"type": "image_url", "image_url": {"url": image.url()}})
    return {"role": "user", "content": parts} if parts else None


def _described(part: JsonDict, model: str) -> JsonDict:
    url = str(cast(JsonDict, part.get("image_url") or {}).get("url", ""))
    head, _, data = url.partition(",")
    mime = head.removeprefix("data:").split(";")[0] or "image"
    size = size_text(len(data) * 3 // 4) if data else "size unknown"
    return {"type": "text", "text": f"[an image ({mime}, {size}) left out: model {model!r} does not accept images]"}


def has_images(message: JsonDict) -> bool:
    content = message.get("content")
    if not isinstance(content, list):
        return False
    return any(isinstance(p, dict) and cast(JsonDict, p).get("type") == "image_url" for p in cast(list[Any], content))


def without_images(messages: Sequence[JsonDict], model: str) -> list[JsonDict]:
    """``messages`` for a model that does not accept images: each image part a short text saying what
    was left out (a message left with text parts only becomes one string, which every provider takes)."""
    out: list[JsonDict] = []
    for message in messages:
        if not has_images(message):
            out.append(message)
            continue
        parts = [
            _described(p, model) if p.get("type") == "image_url" else p
            for p in cast(list[JsonDict], message["content"])
        ]
        texts = [str(p.get("text", "")) for p in parts if p.get("type") == "text"]
        content: Any = "\n".join(texts) if len(texts) == len(parts) else parts
        out.append({**message, "content": content})
    return out


def for_estimate(messages: Sequence[JsonDict]) -> list[JsonDict]:
    """``messages`` with each image's data left out, for counting characters: an image costs a
    model about :data:`IMAGE_TOKENS`, not a quarter of its base64's length."""
    if not any(has_images(m) for m in messages):
        return list(messages)
    stand_in = {"type": "text", "text": "i" * IMAGE_TOKENS * 4}
    return [
        {**m, "content": [stand_in if p.get("type") == "image_url" else p for p in cast(list[JsonDict], m["content"])]}
        if has_images(m)
        else m
        for m in messages
    ]


def as_text(content: object) -> str:
    """A message's content as text: its text parts, an image as ``[image]`` (for a summary request)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = cast(list[JsonDict], content)
        return "\n".join(str(p.get("text", "")) if p.get("type") == "text" else "[image]" for p in parts)
    return json.dumps(content) if content else ""
