"""The ``models:`` section of the config: keys with providers, budgets and tagged models.

    models:
      keys:
        - name: anthropic-main          # optional; defaults to provider-N (N: its place in keys)
          provider: anthropic
          key: ${ANTHROPIC_KEY_1}       # read from the environment at load; missing is an error
          budget: $50/month             # or $5/day, $100 total; optional
          base_url: ...                 # optional (OpenAI-compatible endpoints, local servers)
          models:
            claude-opus-4:   {tags: [heavy, coding, review]}
            my-local-model:  {tags: [light], input_usd_per_mtok: 0.1, output_usd_per_mtok: 0.4, context_window: 32000}
            my-cached-model: {input_usd_per_mtok: 3, output_usd_per_mtok: 15, cache_read_usd_per_mtok: 0.3,
                              cache_write_usd_per_mtok: 3.75}
      fallback_order: [anthropic-main, openai-main]   # key names or ${VAR} references
      probe_interval: 60                              # seconds (or "90s", "5m"); at least 1
      default: heavy                                  # the model of chats and runs that name none
      compact_at: 0.8                                 # compact an agent's transcript past 80% of the window
      compact_model: light                            # who writes the summary (default: the agent's model)

:class:`ModelsConfig` is the pydantic model; :func:`load_models_section` validates a parsed
mapping and turns every mistake into a :class:`~dispatch.hub.errors.ConfigError` naming the file
and the field. Keys not listed in ``fallback_order`` follow the listed ones, in file order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal, Self, cast

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from dispatch.hub.errors import ConfigError, field_path
from dispatch.hub.llm.prices import PER_MTOK, Prices
from dispatch.hub.llm.providers import known_providers

BUILTIN_TAGS = ("heavy", "medium", "light", "coding", "review", "research")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BUDGET = re.compile(r"^\$\s*(\d+(?:\.\d+)?)\s*(?:/\s*(day|month|total)|\s+(total))$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def expand_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with each ``${VAR}`` replaced; a variable that is unset or empty is an error."""
    env = os.environ if environ is None else environ

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = env.get(name, "")
        if not found:
            raise ValueError(f"environment variable {name} is {'empty' if name in env else 'not set'}")
        return found

    return _ENV_REF.sub(value, text)


class Budget(BaseModel):
    """A spending cap for one key over a window: ``$5/day``, ``$50/month`` or ``$100 total``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    amount_usd: float = Field(gt=0, description="the most this key may spend in one window, in US dollars")
    window: Literal["day", "month", "total"] = Field(
        description="day and month windows start at midnight UTC and on the first of the month (UTC)"
    )

    @model_validator(mode="before")
    @classmethod
    def _parse_text(cls, data: object) -> object:
        if not isinstance(data, str):
            return data
        match = _BUDGET.match(data.strip())
        if match is None:
            raise ValueError(f"budget {data!r}: expected '$AMOUNT/day', '$AMOUNT/month' or '$AMOUNT total'")
        return {"amount_usd": float(match.group(1)), "window": (match.group(2) or match.group(3)).lower()}

    def __str__(self) -> str:
        return f"${self.amount_usd:g} total" if self.window == "total" else f"${self.amount_usd:g}/{self.window}"


class ModelEntry(BaseModel):
    """One model a key may call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tags: list[str] = Field(
        default_factory=list[str],
        description="capability labels agents ask for: heavy, medium, light, coding, review, research, or your own",
    )
    input_usd_per_mtok: float | None = Field(
        default=None, ge=0, description="price of a million prompt tokens; set: used instead of litellm's price"
    )
    output_usd_per_mtok: float | None = Field(
        default=None, ge=0, description="price of a million completion tokens; given with input_usd_per_mtok"
    )
    cache_read_usd_per_mtok: float | None = Field(
        default=None, ge=0, description="price of a million prompt tokens read from the prompt cache; unset: input's"
    )
    cache_write_usd_per_mtok: float | None = Field(
        default=None, ge=0, description="price of a million prompt tokens written to the prompt cache; unset: input's"
    )
    context_window: int | None = Field(
        default=None,
        ge=256,
        description="the most tokens one request may hold; unset: litellm's model info, else unknown",
    )

    @model_validator(mode="after")
    def _both_prices(self) -> Self:
        if (self.input_usd_per_mtok is None) != (self.output_usd_per_mtok is None):
            raise ValueError("give both input_usd_per_mtok and output_usd_per_mtok, or neither")
        if self.input_usd_per_mtok is None:
            for name in ("cache_read_usd_per_mtok", "cache_write_usd_per_mtok"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is given without input_usd_per_mtok and output_usd_per_mtok")
        return self

    @cached_property
    def prices(self) -> Prices | None:
        """The configured prices per token, worked out once; None when none are configured
        (litellm's apply)."""
        if self.input_usd_per_mtok is None or self.output_usd_per_mtok is None:
            return None
        read, write = self.cache_read_usd_per_mtok, self.cache_write_usd_per_mtok
        return Prices(
            input=self.input_usd_per_mtok / PER_MTOK,
            output=self.output_usd_per_mtok / PER_MTOK,
            cache_read=None if read is None else read / PER_MTOK,
            cache_write=None if write is None else write / PER_MTOK,
        )


class KeyConfig(BaseModel):
    """One API credential with a provider, the models it may call, and an optional budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="", description="how fallback_order and usage reports name the key; default provider-N")
    provider: str = Field(description="a litellm provider name: anthropic, openai, deepseek, openrouter, ...")
    key: SecretStr | None = Field(
        default=None,
        description="the API key, usually '${ENV_VAR}'; omitted: litellm reads the provider's usual variable",
    )
    base_url: str | None = Field(default=None, description="another endpoint (an OpenAI-compatible server)")
    budget: Budget | None = Field(default=None, description="'$5/day', '$50/month' or '$100 total'; none: no cap")
    models: dict[str, ModelEntry] = Field(min_length=1, description="model name (without provider) -> its tags")
    key_ref: str | None = Field(
        default=None, exclude=True, description="set by the loader: the ${VAR} text the key was read from"
    )

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, provider: str) -> str:
        if provider not in known_providers():
            raise ValueError(f"unknown provider {provider!r} (litellm providers include anthropic, openai, ...)")
        return provider

    @field_validator("key", mode="before")
    @classmethod
    def _read_environment(cls, key: object) -> object:
        if isinstance(key, str):
            key = expand_env(key)
            if not key.strip():
                raise ValueError("the key is empty")
        return key

    def litellm_model(self, model: str) -> str:
        """The name litellm is called with: ``provider/model``."""
        return model if model.startswith(f"{self.provider}/") else f"{self.provider}/{model}"


class ModelsConfig(BaseModel):
    """The ``models:`` section: keys, their fallback order, and how the router waits and retries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str | None = Field(
        default=None,
        min_length=1,
        description="the tag or model name of top agents (chats, runs) that name none; unset: the tag heavy, "
        "else the first configured model, else the provider whose key is in the environment",
    )
    keys: list[KeyConfig] = Field(default_factory=list[KeyConfig], description="API keys, each with its models")
    fallback_order: list[str] = Field(
        default_factory=list[str],
        description="key names or ${VAR} references, first tried first; unlisted keys follow in file order",
    )
    probe_interval: float = Field(
        default=60.0, ge=1.0, description="seconds between probes of a key whose reset time is unknown"
    )
    transient_retries: int = Field(
        default=2, ge=0, le=10, description="retries on the same key after a 5xx or timeout, before moving on"
    )
    backoff_s: float = Field(default=1.0, ge=0, description="first retry delay in seconds; doubles each retry")
    timeout_s: float = Field(default=600.0, gt=0, description="seconds one model call may take")
    compact_at: float = Field(
        default=0.8,
        gt=0.1,
        le=1.0,
        description="the share of a model's context window past which an agent compacts its transcript first",
    )
    compact_model: str | None = Field(
        default=None,
        min_length=1,
        description="the tag or model name that writes compaction summaries; unset: the agent's own model",
    )

    @field_validator("probe_interval", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            match = _DURATION.match(value.strip())
            if match is None:
                raise ValueError(f"{value!r}: expected seconds, or a duration such as '90s', '5m', '1h'")
            return float(match.group(1)) * _UNITS[match.group(2) or "s"]
        return value

    @model_validator(mode="before")
    @classmethod
    def _names_and_references(cls, data: object) -> object:
        """Name unnamed keys ``provider-N`` and turn ``${VAR}`` entries of fallback_order into names."""
        if not isinstance(data, Mapping):
            return data
        data = dict(cast(Mapping[str, Any], data))
        raw_keys: object = data.get("keys")
        if not isinstance(raw_keys, list):
            return data
        by_ref: dict[str, str] = {}
        named: list[object] = []
        for index, raw in enumerate(cast(list[object], raw_keys), start=1):
            if isinstance(raw, Mapping):
                entry = dict(cast(Mapping[str, Any], raw))
                entry.setdefault("name", f"{entry.get('provider', 'key')}-{index}")
                if isinstance(entry.get("key"), str) and _ENV_REF.search(entry["key"]):
                    entry["key_ref"] = entry["key"]
                    by_ref[entry["key"]] = str(entry["name"])
                raw = entry
            named.append(raw)
        data["keys"] = named
        order: object = data.get("fallback_order")
        if isinstance(order, list):
            data["fallback_order"] = [by_ref.get(e, e) if isinstance(e, str) else e for e in cast(list[object], order)]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [k.name for k in self.keys]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"keys: two keys are named {name!r}; give each a distinct name")
        by_secret = {k.key.get_secret_value(): k.name for k in self.keys if k.key is not None}
        order = [by_secret.get(e, e) for e in self.fallback_order]  # references expanded by the caller
        for index, entry in enumerate(order):
            if entry not in names:
                raise ValueError(
                    f"fallback_order[{index}]: {entry!r} names no key (keys: {', '.join(names) or 'none'})"
                )
        object.__setattr__(self, "fallback_order", order)
        return self

    def ordered_keys(self) -> list[KeyConfig]:
        """Every key, in fallback order: the listed ones first, then the rest in file order."""
        by_name = {k.name: k for k in self.keys}
        listed = [by_name[n] for n in dict.fromkeys(self.fallback_order)]
        return listed + [k for k in self.keys if k.name not in self.fallback_order]

    def key(self, name: str) -> KeyConfig | None:
        return next((k for k in self.keys if k.name == name), None)


def config_error(error: ValidationError, source: str, prefix: str = "") -> ConfigError:
    """One ConfigError listing every problem as ``file: field: what is wrong``."""
    lines: list[str] = []
    for problem in error.errors(include_url=False, include_input=False):
        message = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(f"{source}: {field_path(problem['loc'], prefix)}: {message}")
    return ConfigError("\n".join(lines))


def load_models_section(data: object, source: str) -> ModelsConfig:
    """Validate the parsed ``models:`` mapping of ``source``; None gives the empty section."""
    try:
        return ModelsConfig.model_validate({} if data is None else data)
    except ValidationError as error:
        raise config_error(error, source, "models") from None
