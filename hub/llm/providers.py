"""The provider names litellm knows, read without importing litellm (a two-second import).

litellm lists its providers in the ``LlmProviders`` enum of ``litellm/types/utils.py``; the names
are read from that file's text, so config validation stays quick and matches the installed
litellm. Should the file move, a built-in list of the common providers is used instead.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path

COMMON = frozenset(
    {
        "openai",
        "anthropic",
        "azure",
        "gemini",
        "vertex_ai",
        "bedrock",
        "mistral",
        "groq",
        "deepseek",
        "openrouter",
        "xai",
        "together_ai",
        "cohere",
        "fireworks_ai",
        "ollama",
        "ollama_chat",
        "hosted_vllm",
        "lm_studio",
        "perplexity",
        "cerebras",
    }
)
_MEMBER = re.compile(r'^\s+[A-Z0-9_]+\s*=\s*"([a-z0-9_\-]+)"', re.MULTILINE)


@cache
def known_providers() -> frozenset[str]:
    """Every provider name the installed litellm accepts as a model prefix."""
    try:
        spec = importlib.util.find_spec("litellm")
        origin = spec.origin if spec is not None else None
        if origin is None:
            return COMMON
        text = (Path(origin).parent / "types" / "utils.py").read_text(encoding="utf-8")
    except (OSError, ImportError, ValueError):
        return COMMON
    start = text.find("class LlmProviders(")
    if start < 0:
        return COMMON
    end = text.find("\nclass ", start + 1)
    names = frozenset(_MEMBER.findall(text[start : end if end > 0 else None]))
    return names | COMMON if names else COMMON
