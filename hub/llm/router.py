"""The key router: a :class:`~dispatch.hub.llm.types.ModelClient` over many keys and providers.

For each model call it resolves the tag or model name to candidates (:mod:`.resolve`), skips the
keys that are unavailable (:mod:`.keys`: provider marks, budgets from the usage ledger), and calls
the first one through litellm with that key's ``api_key`` / ``api_base`` and litellm's retries
off. On a failure (:mod:`.failures`):

* quota, rate limit or a refused key: the key is marked and the same call moves on to the next
  candidate at once;
* 5xx or a timeout: retried on the same key with exponential backoff, then the next candidate;
* an unreachable endpoint: the next candidate;
* a request longer than the model's context window: raised at once (the agent compacts);
* anything else (a bad request): raised at once.

When no candidate is left and at least one key will come back (a known reset, or a probe of a
key whose reset is unknown), it raises :class:`~dispatch.hub.errors.KeysExhausted`, whose
``wait()`` sleeps on the router's clock; the agent loop waits and asks again. Every attempt,
successful or not, is written to the usage ledger with its agent, key, model, tokens, cost and
latency.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import anyio

from dispatch.hub.errors import ConfigError, KeysExhausted, ModelCallError
from dispatch.hub.llm.client import call_litellm
from dispatch.hub.llm.clock import Clock, SystemClock
from dispatch.hub.llm.context import ContextMeter
from dispatch.hub.llm.defaults import missing_key, no_key_problem
from dispatch.hub.llm.failures import Failure, FailureKind
from dispatch.hub.llm.keys import Blocked, KeyStates, budget_block, describe_wait, window_bounds
from dispatch.hub.llm.ledger import Ledger, UsageRow, usage_columns
from dispatch.hub.llm.model_process import RemoteCallError
from dispatch.hub.llm.models_config import ModelsConfig
from dispatch.hub.llm.resolve import Candidate, resolve
from dispatch.hub.llm.types import Completion, DeltaSink, JsonDict

log = logging.getLogger(__name__)


class _Exhausted(Exception):
    def __init__(self, blocked: Blocked) -> None:
        self.blocked = blocked


class _MoveOn(Exception):
    def __init__(self, error: Exception) -> None:
        self.error = error


def _classified(error: Exception, model: str, now: float) -> tuple[Failure, Exception]:
    """A failed call's failure for the router and the error Dispatch shows for it."""
    if isinstance(error, RemoteCallError):
        return error.failure(now), error.dispatch_error()
    return Failure(FailureKind.fatal, None, str(error)), ModelCallError(f"model {model!r}: {error}")


class Router:
    """Answers ``complete(tag_or_model, ...)`` from the configured keys, in fallback order."""

    def __init__(self, config: ModelsConfig, store: Ledger, *, clock: Clock | None = None) -> None:
        self._config = config
        self._ledger = store
        self._clock: Clock = clock or SystemClock()
        self._states = KeyStates(self._clock, config.probe_interval)
        self._unpriced: set[str] = set()
        self.meter = ContextMeter(config)
        """The context windows and token counts of this config's models (litellm's, in the worker)."""

    @property
    def config(self) -> ModelsConfig:
        return self._config

    def use(self, config: ModelsConfig) -> None:
        """Use an edited ``models`` section from the next call on. A key whose settings changed, and
        every key read from the environment, loses its marks: a key refused with 401 is tried again
        once the user fixed it."""
        old = {k.name: k for k in self._config.keys}
        new = {k.name: k for k in config.keys}
        for name in {n for n in old.keys() | new.keys() if old.get(n) != new.get(n)}:
            self._states.clear(name)
        self._states.clear_environment()
        self._states.probe_interval = config.probe_interval
        self._config = config
        self.meter.use(config)

    def candidates(self, requested: str) -> list[Candidate]:
        """The (model, key) candidates for a tag or model name, first choice first."""
        return resolve(self._config, requested)

    async def blocked(self, candidate: Candidate) -> Blocked | None:
        """Why the candidate's key cannot be used now, or None when it can."""
        marked = self._states.blocked(candidate.key_name)
        if marked is not None:
            return marked
        key = candidate.key
        if key is None or key.budget is None:
            return None
        now = self._clock.now()
        start, _ = window_bounds(key.budget.window, now)
        spent = await self._ledger.spend(key.name, start)
        return budget_block(key.name, str(key.budget), key.budget.window, key.budget.amount_usd, spent, now)

    async def complete(
        self,
        model: str,
        messages: Sequence[JsonDict],
        tools: Sequence[JsonDict],
        *,
        agent_id: str | None = None,
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        blocked: list[Blocked] = []
        failed: Exception | None = None
        for candidate in self.candidates(model):
            unset = missing_key(candidate.litellm_model) if candidate.key is None else None
            if unset is not None:  # found before the worker loads litellm: one line, at once
                failed = ConfigError(no_key_problem(candidate.litellm_model, candidate.provider, unset))
                continue
            why = await self.blocked(candidate)
            if why is not None:
                blocked.append(why)
                continue
            try:
                return await self._call(candidate, model, messages, tools, agent_id, on_delta)
            except _Exhausted as exhausted:
                blocked.append(exhausted.blocked)
            except _MoveOn as move_on:
                failed = move_on.error
        raise self._no_candidate(model, blocked, failed)

    def _no_candidate(self, model: str, blocked: list[Blocked], failed: Exception | None) -> Exception:
        retry = [b.retry_at for b in blocked if b.retry_at is not None]
        if not retry:
            if failed is not None:
                return failed
            reasons = "; ".join(f"{b.key}: {b.why}" for b in blocked)
            return ModelCallError(f"model {model!r}: no key can be used until the config changes ({reasons})")
        now = self._clock.now()
        retry_at = min(retry)
        known = [b.until for b in blocked if b.until is not None and b.retry_at is not None]
        until = datetime.fromtimestamp(min(known)).astimezone() if known else None

        async def wait() -> None:
            await self._clock.sleep_until(retry_at)

        return KeysExhausted(describe_wait(blocked, now, self._states.probe_interval), until=until, wait=wait)

    async def _call(
        self,
        candidate: Candidate,
        requested: str,
        messages: Sequence[JsonDict],
        tools: Sequence[JsonDict],
        agent_id: str | None,
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        attempts = 1 + self._config.transient_retries
        for attempt in range(attempts):
            started = time.perf_counter()
            try:
                completion = await call_litellm(
                    candidate.litellm_model,
                    messages,
                    tools,
                    timeout_s=self._config.timeout_s,
                    api_key=candidate.api_key,
                    api_base=candidate.api_base,
                    on_delta=on_delta,
                    thread=agent_id,
                )
            except Exception as error:  # every provider failure is classified, recorded and acted on
                failure, mapped = _classified(error, candidate.litellm_model, self._clock.now())
                await self._record(candidate, requested, agent_id, failure, time.perf_counter() - started)
                if failure.kind.exhausts_key:
                    raise _Exhausted(self._states.mark(candidate.key_name, failure)) from error
                if failure.kind is FailureKind.transient and attempt + 1 < attempts:
                    await anyio.sleep(self._config.backoff_s * 2**attempt)
                    continue
                if failure.kind in (FailureKind.fatal, FailureKind.context):  # context: the agent compacts
                    raise mapped from error
                raise _MoveOn(mapped) from error
            self._price(candidate, completion)
            await self._record(candidate, requested, agent_id, completion, completion.latency_s)
            self._states.clear(candidate.key_name)
            return completion
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _price(self, candidate: Candidate, completion: Completion) -> None:
        """The configured prices of the model, when given, instead of litellm's (the worker priced
        the call at litellm's); a model with neither is warned about once."""
        usage = completion.usage
        configured = candidate.entry.prices if candidate.entry is not None else None
        if configured is not None:
            usage.cost_usd = configured.cost_usd(usage)
            return
        if usage.cost_usd == 0 and candidate.key is not None and candidate.litellm_model not in self._unpriced:
            self._unpriced.add(candidate.litellm_model)
            log.warning(
                "no price for %s (key %s): its calls cost $0 in the ledger; set input_usd_per_mtok and "
                "output_usd_per_mtok for it in the config",
                candidate.litellm_model,
                candidate.key_name,
            )

    async def _record(
        self,
        candidate: Candidate,
        requested: str,
        agent_id: str | None,
        outcome: Completion | Failure,
        latency_s: float,
    ) -> None:
        row = UsageRow(
            at=self._clock.now(),
            agent_id=agent_id,
            key=candidate.key_name,
            provider=candidate.provider,
            model=candidate.litellm_model,
            requested=requested,
            latency_s=latency_s,
        )
        if isinstance(outcome, Completion):
            usage = outcome.usage
            row = replace(row, **usage_columns(usage))
        else:
            row = replace(row, outcome=outcome.kind.value, error=outcome.detail[:500])
        await self._ledger.record_usage(row)
