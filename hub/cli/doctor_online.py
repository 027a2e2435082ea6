"""``dispatch doctor --online``: one cheap authenticated call per key, to know a key works before an
agent needs it.

Each configured key is tried with the first model it lists, through the same model worker and
error translation agents use (:func:`~dispatch.hub.llm.client.call_litellm`): a one-token answer
to a one-word prompt, so a check costs a handful of tokens. With no ``models`` config the model a
new chat would use (from the environment's key) is tried instead. The calls run at once, each
with its own deadline; a key that fails is reported with the provider's answer translated
(refused key, unreachable endpoint with its URL, unknown model), never a library's class name.
"""

from __future__ import annotations

import time

import anyio

from dispatch.hub.cli.doctor import Finding
from dispatch.hub.errors import unwrap
from dispatch.hub.llm.client import call_litellm, start_model_worker
from dispatch.hub.llm.defaults import DefaultModel
from dispatch.hub.llm.model_process import RemoteCallError
from dispatch.hub.llm.models_config import ModelsConfig

__all__ = ["ONLINE_TIMEOUT_S", "check_keys_online"]

ONLINE_TIMEOUT_S = 30.0
_PROMPT = [{"role": "user", "content": "Answer with one word: ok"}]


async def _try(topic: str, model: str, api_key: str | None, api_base: str | None) -> Finding:
    started = time.perf_counter()
    try:
        await call_litellm(
            model,
            _PROMPT,
            [],
            timeout_s=ONLINE_TIMEOUT_S,
            api_key=api_key,
            api_base=api_base,
            extra={"max_tokens": 1},
        )
    except RemoteCallError as failed:
        return Finding(topic, f"{model}: {failed.dispatch_error()}", "failed")
    except Exception as raised:  # the worker itself could not run the call
        return Finding(topic, f"{model}: the call could not be made: {unwrap(raised)}", "failed")
    return Finding(topic, f"{model} answered in {time.perf_counter() - started:.1f} s")


async def check_keys_online(config: ModelsConfig, chosen: DefaultModel | None) -> list[Finding]:
    """A finding per key (or, with no keys configured, for the default model): whether one
    one-token call with it succeeded, and how long it took."""
    attempts: list[tuple[str, str, str | None, str | None]] = []
    for key in config.ordered_keys():
        first = next(iter(key.models))
        secret = None if key.key is None else key.key.get_secret_value()
        attempts.append((f"key {key.name}", key.litellm_model(first), secret, key.base_url))
    if not config.keys and chosen is not None:
        attempts.append(("default", chosen.model, None, None))
    if not attempts:
        return [Finding("online", "nothing to try: no key is configured and none is in the environment", "missing")]
    found: list[Finding | None] = [None] * len(attempts)

    async def one(index: int) -> None:
        found[index] = await _try(*attempts[index])

    await start_model_worker()
    async with anyio.create_task_group() as calls:
        for index in range(len(attempts)):
            calls.start_soon(one, index)
    return [finding for finding in found if finding is not None]
