"""The model worker: a process of its own that makes the hub's litellm calls.

litellm costs several milliseconds of Python per call (the OpenAI SDK's request transformation,
litellm's logging and cost bookkeeping; ``openai/`` and ``anthropic/`` models skip the last two,
:mod:`dispatch.hub.llm.litellm_direct`). In the hub's process that CPU would hold the interpreter
lock against the hub's event loop, and under load every event, API answer and store write would
wait for it. So the hub sends each call here (:mod:`dispatch.hub.llm.model_process`) and only
waits for the answer.

The protocol is JSON lines: the hub writes a :class:`CallRequest`, ``{"id": N, "cancel": true}``
or ``{"id": N, "measure": MeasureRequest}`` to the worker's stdin; the worker answers each
request, in any order, with one :class:`CallAnswer` on its stdout: the completion, or the failure
already classified (the kind the key router acts on, the provider's headers for a rate limit's
reset, and the error Dispatch shows), or for a measure what litellm knows of the model's context
window and the request's tokens. A streamed call (``"stream": true``) is answered with frames of
the parts of its answer as they arrive (``{"id": N, "deltas": [...]}``, coalesced:
:mod:`dispatch.hub.llm.streaming`) before its completion. The worker exits when its stdin
closes. ``python -m dispatch.hub.llm.model_worker``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import IO, Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict

from dispatch.hub.errors import UserError
from dispatch.hub.heap import settle_heap
from dispatch.hub.llm.failures import classify, headers_of
from dispatch.hub.llm.litellm_call import acompletion, load_litellm, measure, model_error
from dispatch.hub.llm.litellm_direct import EncodedMessages, forget_environment
from dispatch.hub.llm.openai_body import send_chat_bodies_as_given
from dispatch.hub.llm.streaming import Coalescer
from dispatch.hub.llm.types import Completion, Delta, JsonDict, Measured

_Kept = TypeVar("_Kept")

LINE_LIMIT = 256 * 1024 * 1024
"""The longest line either side reads: a request may carry a whole transcript."""
THREADS_KEPT = 256
"""How many conversations' messages a worker keeps for the next call of each (the least recently
used go first; the hub is then told to send one's messages whole)."""


def keep_thread(threads: dict[str, _Kept], thread: str, kept: _Kept) -> None:
    """Keep ``kept`` (its messages) as ``thread``'s latest, the least recently used thread let go
    beyond :data:`THREADS_KEPT` (the worker and the hub's record of it follow this one rule)."""
    threads.pop(thread, None)
    threads[thread] = kept
    while len(threads) > THREADS_KEPT:
        del threads[next(iter(threads))]


class CallRequest(BaseModel):
    """One model call, as the hub asks for it."""

    model_config = ConfigDict(extra="forbid")

    id: int
    model: str
    messages: list[JsonDict]
    tools: list[JsonDict]
    timeout_s: float
    api_key: str | None = None
    api_base: str | None = None
    extra: JsonDict | None = None
    env: dict[str, str] | None = None
    """The hub's environment, when it changed since the worker last had it (litellm reads its
    keys and base URLs from there); the worker takes it over whole before this call."""
    stream: bool = False
    """Stream the answer: its parts come back in frames (coalesced) before the answer itself."""
    thread: str | None = None
    """The conversation the call continues (an agent's id): the worker keeps the messages of its
    last call, so the next one need only send what follows them."""
    reuse: int = 0
    """How many of ``thread``'s kept messages begin this call's, before ``messages``."""


class MeasureRequest(BaseModel):
    """A model's context window (litellm's model info) and, given messages, their tokens (litellm's counter)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[JsonDict] | None = None
    tools: list[JsonDict] = []


class CallFailed(BaseModel):
    """A failed call, classified where litellm's exception is at hand."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    """A :class:`~dispatch.hub.llm.failures.FailureKind` value."""
    detail: str
    headers: dict[str, str]
    user_error: bool
    """Whether Dispatch shows it as the user's mistake (an unknown model) rather than the call's."""
    message: str


READY_LINE = b'{"ready": true}\n'
"""What the worker writes once litellm is loaded, before any answer."""


class CallAnswer(BaseModel):
    """The answer to one request: its completion or its failure; or, before the answer of a
    streamed call, a frame of the parts of it that arrived (``deltas``)."""

    model_config = ConfigDict(extra="forbid")

    id: int
    completion: Completion | None = None
    failed: CallFailed | None = None
    measured: Measured | None = None
    deltas: list[Delta] | None = None
    resend: bool = False
    """The worker no longer has the messages ``reuse`` named: the call is to be sent whole."""


def failed_call(error: Exception, model: str, api_base: str | None = None) -> CallFailed:
    """A litellm exception as the hub needs it."""
    litellm = load_litellm()
    failure = classify(litellm, error, time.time())
    mapped = model_error(litellm, model, error, api_base)
    return CallFailed(
        kind=failure.kind.value,
        detail=failure.detail,
        headers=dict(headers_of(error)),
        user_error=isinstance(mapped, UserError),
        message=str(mapped),
    )


@dataclass(frozen=True)
class _Thread:
    """What the worker keeps of a thread: its messages as its last call had them, and their
    encoding for the direct path (:class:`~dispatch.hub.llm.litellm_direct.EncodedMessages`)."""

    messages: list[JsonDict]
    encoded: EncodedMessages


class _Worker:
    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._threads: dict[str, _Thread] = {}
        """Each thread's messages as its last call had them, least recently used first."""

    def _answer(self, answer: CallAnswer) -> None:
        self._out.write(answer.model_dump_json().encode() + b"\n")
        self._out.flush()

    async def _call(self, request: CallRequest, encoded: EncodedMessages | None) -> None:
        coalescer: Coalescer | None = None
        if request.stream:
            coalescer = Coalescer(lambda deltas: self._answer(CallAnswer(id=request.id, deltas=deltas)))
        try:
            completion = await acompletion(
                load_litellm(),
                request.model,
                request.messages,
                request.tools,
                request.timeout_s,
                request.api_key,
                request.api_base,
                request.extra,
                on_part=None if coalescer is None else coalescer.add,
                known=encoded,
            )
            if coalescer is not None:
                coalescer.close()  # the last parts before the answer
        except asyncio.CancelledError:
            raise
        except Exception as error:  # every failure goes back to the hub, classified
            self._answer(CallAnswer(id=request.id, failed=failed_call(error, request.model, request.api_base)))
        else:
            self._answer(CallAnswer(id=request.id, completion=completion))
        finally:
            if coalescer is not None:
                coalescer.discard()  # a failed call's parts: the hub forgets them with the call
            self._calls.pop(request.id, None)

    def handle(self, line: bytes) -> None:
        raw: Any = json.loads(line)
        if isinstance(raw, dict) and cast(dict[str, Any], raw).get("cancel"):
            task = self._calls.pop(int(cast(dict[str, Any], raw)["id"]), None)
            if task is not None:
                task.cancel()
            return
        if isinstance(raw, dict) and "measure" in raw:
            asked = MeasureRequest.model_validate(cast(dict[str, Any], raw)["measure"])
            measured = measure(load_litellm(), asked.model, asked.messages, asked.tools)
            self._answer(CallAnswer(id=int(cast(dict[str, Any], raw)["id"]), measured=measured))
            return
        request = CallRequest.model_validate(raw)
        encoded = None if request.thread is None else self._continue(request)
        if request.thread is not None and encoded is None:
            self._answer(CallAnswer(id=request.id, resend=True))
            return
        if request.env is not None:
            os.environ.clear()
            os.environ.update(request.env)
            forget_environment()
        self._calls[request.id] = asyncio.get_running_loop().create_task(self._call(request, encoded))

    def _continue(self, request: CallRequest) -> EncodedMessages | None:
        """Put the kept messages ``request.reuse`` names before its own, and keep the whole for
        the thread's next call; their encoding so far, or None when they are no longer kept."""
        assert request.thread is not None
        kept = self._threads.pop(request.thread, None)
        if request.reuse:
            if kept is None or len(kept.messages) < request.reuse:
                return None
            request.messages = kept.messages[: request.reuse] + request.messages
        encoded = kept.encoded if kept is not None else EncodedMessages()
        keep_thread(self._threads, request.thread, _Thread(request.messages, encoded))
        return encoded

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        load_litellm()  # the import takes seconds; done before the first answer is awaited
        send_chat_bodies_as_given()  # the OpenAI SDK's walk of each body: most of this process's CPU
        settle_heap()  # litellm's modules (most of this process) out of every full collection's walk
        self._out.write(READY_LINE)  # the hub says "loading" until it reads this
        self._out.flush()
        while line := await reader.readline():
            self.handle(line)
        for task in list(self._calls.values()):
            task.cancel()


def main() -> None:
    # Ctrl-C in a terminal reaches the whole foreground process group: the worker leaves stopping
    # to the process that started it, and ends when that one closes its stdin (or dies).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol gets the real stdout; anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    asyncio.run(_Worker(out).run())


if __name__ == "__main__":
    main()
