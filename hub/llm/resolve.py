"""From what an agent asks for (a tag or a model name) to the (model, key) candidates, in order.

1. A configured model name (``claude-opus-4`` or ``anthropic/claude-opus-4``): every key that
   lists it, in fallback order.
2. A tag: every model with that tag, key by key in fallback order, models in file order.
3. A built-in tag no configured model has: an error naming the tag.
4. Anything else is a litellm model name called through litellm's environment (``OPENAI_API_KEY``,
   ``OPENAI_BASE_URL``, ...), as a single candidate whose key is ``env:PROVIDER``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatch.hub.errors import UserError
from dispatch.hub.llm.models_config import BUILTIN_TAGS, KeyConfig, ModelEntry, ModelsConfig


@dataclass(frozen=True)
class Candidate:
    """One model on one key (or on litellm's environment when ``key`` is None)."""

    model: str
    """The model as configured (for the environment: the litellm name asked for)."""
    key: KeyConfig | None = None
    entry: ModelEntry | None = None

    @property
    def key_name(self) -> str:
        return self.key.name if self.key is not None else f"env:{self.provider}"

    @property
    def provider(self) -> str:
        if self.key is not None:
            return self.key.provider
        return self.model.split("/", 1)[0] if "/" in self.model else "default"

    @property
    def litellm_model(self) -> str:
        return self.key.litellm_model(self.model) if self.key is not None else self.model

    @property
    def api_key(self) -> str | None:
        return self.key.key.get_secret_value() if self.key is not None and self.key.key is not None else None

    @property
    def api_base(self) -> str | None:
        return self.key.base_url if self.key is not None else None


def resolve(config: ModelsConfig, requested: str) -> list[Candidate]:
    """The candidates for ``requested``, first choice first. Raises UserError for an unknown built-in tag."""
    keys = config.ordered_keys()
    named = [
        Candidate(name, key, entry)
        for key in keys
        for name, entry in key.models.items()
        if requested in (name, key.litellm_model(name))
    ]
    if named:
        return named
    tagged = [
        Candidate(name, key, entry) for key in keys for name, entry in key.models.items() if requested in entry.tags
    ]
    if tagged:
        return tagged
    if requested in BUILTIN_TAGS:
        where = "in models.keys of the config" if keys else "(no models are configured)"
        raise UserError(f"no model has the tag {requested!r} {where}; tag a model or give a model name")
    return [Candidate(requested)]
