"""Which model a top agent gets when nobody named one, and which key a provider reads.

The choice, first match wins:

1. ``models.default`` in the config (a tag or a model name);
2. the tag ``heavy``, when a configured model carries it;
3. the first model of the first configured key;
4. with no ``models.keys`` at all: the first provider in :data:`PROVIDER_DEFAULTS` whose key
   variable is set in the environment, with that provider's current default model.

``dispatch serve --model`` and ``dispatch mcp --model`` (and ``dispatch run --model``) come before
all of these; a template that names a model comes before the config's choice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from dispatch.hub.llm.models_config import ModelsConfig
from dispatch.hub.llm.resolve import resolve

PROVIDER_DEFAULTS: tuple[tuple[str, str, str], ...] = (
    ("anthropic", "ANTHROPIC_API_KEY", "anthropic/claude-sonnet-4-6"),
    ("openai", "OPENAI_API_KEY", "openai/gpt-5.2"),
    ("gemini", "GEMINI_API_KEY", "gemini/gemini-3.1-pro-preview"),
    ("openrouter", "OPENROUTER_API_KEY", "openrouter/anthropic/claude-sonnet-4.5"),
    ("deepseek", "DEEPSEEK_API_KEY", "deepseek/deepseek-chat"),
    ("mistral", "MISTRAL_API_KEY", "mistral/mistral-large-latest"),
    ("xai", "XAI_API_KEY", "xai/grok-4.3"),
    ("groq", "GROQ_API_KEY", "groq/openai/gpt-oss-120b"),
)
"""(provider, the environment variable litellm reads its key from, the model a new chat uses)."""

KEY_VARIABLES: dict[str, str] = {provider: variable for provider, variable, _ in PROVIDER_DEFAULTS} | {
    "cohere": "COHERE_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "fireworks_ai": "FIREWORKS_AI_API_KEY",
    "perplexity": "PERPLEXITYAI_API_KEY",
    "cerebras": "CEREBRAS_API_KEY",
}
"""The variable litellm reads a provider's key from, for the providers whose key is one variable."""


@dataclass(frozen=True)
class DefaultModel:
    """The model (a tag or a model name) a top agent gets, and why."""

    model: str
    source: str
    """Where the choice came from, as a user reads it: ``models.default in the config``..."""


def default_model(config: ModelsConfig, environ: Mapping[str, str] | None = None) -> DefaultModel | None:
    """The default model for ``config`` (see the module's docstring); None when there is none."""
    if config.default:
        return DefaultModel(config.default, "models.default in the config")
    entries = [(key, name, entry) for key in config.ordered_keys() for name, entry in key.models.items()]
    if any("heavy" in entry.tags for _, _, entry in entries):
        return DefaultModel("heavy", "the tag heavy of the models config")
    if config.keys:
        key = config.keys[0]
        name = next(iter(key.models))
        return DefaultModel(name, f"the first model of the key {key.name} in the models config")
    env = os.environ if environ is None else environ
    for _, variable, model in PROVIDER_DEFAULTS:
        if env.get(variable, "").strip():
            return DefaultModel(model, f"{variable} is set")
    return None


def no_model_hint() -> str:
    """What to do when there is no model, in one sentence."""
    variables = ", ".join(variable for _, variable, _ in PROVIDER_DEFAULTS[:4])
    return (
        f"set a provider's key ({variables}, ...), name one in the config (models.default, or models.keys), "
        "or give --model"
    )


def missing_key(litellm_model: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable to set when ``litellm_model`` (``provider/name``) is called through litellm's
    environment and its provider's key variable is unset; None when it is set or not known."""
    provider = litellm_model.split("/", 1)[0] if "/" in litellm_model else ""
    variable = KEY_VARIABLES.get(provider)
    env = os.environ if environ is None else environ
    if variable is None or env.get(variable, "").strip():
        return None
    return variable


def no_key_problem(litellm_model: str, provider: str, variable: str) -> str:
    """The one line a user reads when ``litellm_model`` has no key."""
    return (
        f"model {litellm_model!r} has no key: set {variable} in the environment, "
        f"or give the {provider} provider a key under models.keys in the config"
    )


def unkeyed(config: ModelsConfig, requested: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why ``requested`` (a tag or model name) cannot be called at all for want of a key, found
    without loading litellm; None when some candidate has a key (or one cannot be told missing).
    Raises UserError for a built-in tag no configured model has."""
    problems: list[str] = []
    for candidate in resolve(config, requested):
        variable = missing_key(candidate.litellm_model, environ) if candidate.key is None else None
        if variable is None:
            return None
        problems.append(no_key_problem(candidate.litellm_model, candidate.provider, variable))
    return problems[0] if problems else None
