"""One model call: the seam every agent's LLM request goes through.

Agents hold a :class:`~dispatch.hub.llm.types.ModelClient`. :func:`call_litellm` makes one call
through litellm (retries off) in the model worker process (:mod:`dispatch.hub.llm.model_process`;
litellm itself never loads in the hub's process, and :mod:`dispatch.hub.llm.litellm_call` says
which of its paths a call takes). The plain
:class:`LiteLLMClient` calls with the agent's litellm model name, so litellm's usual environment
(``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ...) is honoured; the key router
(:mod:`dispatch.hub.llm.router`) adds tags, keys, budgets, fallback and the usage ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence

import anyio

from dispatch.hub.llm.model_loop import adopt_running_loop, model_loop, release_loop
from dispatch.hub.llm.model_process import CallRequest, RemoteCallError, model_process
from dispatch.hub.llm.types import Completion, Delta, DeltaSink, JsonDict


async def call_litellm(
    model: str,
    messages: Sequence[JsonDict],
    tools: Sequence[JsonDict],
    *,
    timeout_s: float,
    api_key: str | None = None,
    api_base: str | None = None,
    extra: JsonDict | None = None,
    on_delta: DeltaSink | None = None,
    thread: str | None = None,
) -> Completion:
    """One call through litellm with litellm's retries off, made by the model worker
    process (:mod:`dispatch.hub.llm.model_process`); a failure raises its
    :class:`~dispatch.hub.llm.model_process.RemoteCallError`, classified there. With ``on_delta``
    the call streams, and ``on_delta`` is called on the caller's loop with each part as it comes.
    ``thread`` (an agent's id) lets the worker keep the messages for the thread's next call."""
    # the hub's own messages: not validated (a copy of every message, each step) but passed on as they are
    request = CallRequest.model_construct(
        id=0,
        model=model,
        messages=list(messages),
        tools=list(tools),
        timeout_s=timeout_s,
        api_key=api_key,
        api_base=api_base,
        extra=extra,
        stream=on_delta is not None,
        thread=thread,
    )
    sink: DeltaSink | None = None
    if on_delta is not None:
        caller = asyncio.get_running_loop()

        def hop(delta: Delta) -> None:  # called on the model-call loop
            with contextlib.suppress(RuntimeError):  # the caller's loop closed meanwhile: nobody listens
                caller.call_soon_threadsafe(on_delta, delta)

        sink = hop
    return await model_loop().run(lambda: model_process().call(request, sink))


async def start_model_worker(workers: int | None = None) -> None:
    """Start the model worker processes ahead of the first call, ``workers`` of them (None: as many
    as the pool has, by default one per core): litellm loads while the command starts."""
    await model_loop().run(lambda: model_process().start(workers))


@contextlib.asynccontextmanager
async def model_calls_on_this_loop() -> AsyncGenerator[None]:
    """For the context, the process's model calls are made on the running loop (a command's, which
    lasts as long as the command) by workers started for it, ended and waited for at its exit.
    Nothing changes when calls already have a loop (a command that started its workers first)."""
    if not adopt_running_loop():
        yield
        return
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await model_process().close()
        model_process.cache_clear()
        release_loop()


def begin_model_worker(workers: int | None = None) -> None:
    """:func:`start_model_worker` from synchronous code, without waiting: a command calls it first
    thing, so litellm's import (seconds) overlaps the command's own start."""
    model_loop().submit(lambda: model_process().start(workers))


class LiteLLMClient:
    """Calls ``litellm.acompletion`` through litellm's environment, with no keys, ledger or fallback
    (the :class:`~dispatch.hub.llm.router.Router` adds those). Retries are off."""

    def __init__(self, *, timeout_s: float = 600.0, extra: JsonDict | None = None) -> None:
        self._timeout_s = timeout_s
        self._extra = dict(extra or {})

    async def complete(
        self,
        model: str,
        messages: Sequence[JsonDict],
        tools: Sequence[JsonDict],
        *,
        agent_id: str | None = None,
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        try:
            return await call_litellm(
                model, messages, tools, timeout_s=self._timeout_s, extra=self._extra, on_delta=on_delta, thread=agent_id
            )
        except RemoteCallError as error:  # every litellm failure becomes one of ours, with its cause kept
            raise error.dispatch_error() from error
