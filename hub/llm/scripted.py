"""The scripted model: a deterministic :class:`~dispatch.hub.llm.types.ModelClient` that answers
each agent from a script, in process (no HTTP server, no model worker, no network).

A script is one agent's part: the request belongs to the one script whose ``match`` text occurs
in its first user message (the agent's task), optionally narrowed by ``model``; each request of
that agent takes the script's next step::

    model = ScriptedModel([
        Script(match="[top]", steps=[Reply(tool_calls=[ToolCall("summon", {...})]), Reply(text="done")]),
        Script(match="[child]", steps=[Reply(tool_calls=[ToolCall("write_file", {...})]), Reply(text="ok")]),
    ])
    with model:                       # on leaving: assert_complete()
        async with Hub.open(root, data, model=model) as hub: ...

A step is a :class:`Reply` (text and/or tool calls, after ``delay_s``, with token ``usage``), a
:class:`Fail` (the call fails: :class:`~dispatch.hub.errors.ModelCallError` naming the status and
the provider's message) or a function of the :class:`RecordedRequest` returning either (or
raising, to fail the call with that very error). Scripts are data too: :func:`load_scripts` reads
a YAML or JSON list of ``{match, model?, steps}``, each step ``{text?, tool_calls?, delay_s?,
usage?, chunk_delay_s?}`` or ``{fail: STATUS, body?, headers?, delay_s?}``, and names the entry, step and field of
a mistake.

It fails loudly. A request that no script matches, that several match, or whose script is used
up raises :class:`ScriptError` (a ``ModelCallError``: the agent fails, naming it) and is kept in
:attr:`ScriptPlayer.failures`; :meth:`ScriptPlayer.assert_complete` raises
:class:`ScriptNotFollowed` listing those failures and every step no request used. Each
:class:`~dispatch.hub.llm.types.Completion` carries token counts (about four characters a token,
or the step's ``usage``) and a cost of 0, so budgets and usage views work.

The scripted OpenAI-compatible HTTP server of the test suite plays the same scripts by the same
rules (:class:`ScriptPlayer` is their shared part), for the tests that cross litellm.
"""

from __future__ import annotations

import inspect
import itertools
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any, TypeAlias, cast

import anyio
import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic import dataclasses as pydantic_dataclasses

from dispatch.hub.errors import ConfigError, ContextTooLong, ModelCallError
from dispatch.hub.llm.streaming import Coalescer
from dispatch.hub.llm.types import Completion, Delta, DeltaSink, JsonDict, ToolCallRequest, Usage

__all__ = [
    "Fail",
    "RecordedRequest",
    "Reply",
    "Script",
    "ScriptError",
    "ScriptNotFollowed",
    "ScriptPlayer",
    "ScriptedModel",
    "Step",
    "StepFn",
    "ToolCall",
    "load_scripts",
]

_DATA = ConfigDict(extra="forbid", frozen=True)


@pydantic_dataclasses.dataclass(config=_DATA)
class ToolCall:
    """A tool call the model makes; it is given an id (``call_1``, ...) and its arguments are
    JSON-encoded."""

    name: str
    arguments: JsonDict = field(default_factory=dict[str, Any])


@pydantic_dataclasses.dataclass(config=_DATA)
class Reply:
    """A successful answer: text, tool calls or both, after ``delay_s`` (awaited, never blocking).
    ``usage`` is ``(prompt_tokens, completion_tokens)``; by default about four characters a token.
    A streamed call gets it in :meth:`parts` (each word of the text, then each call's arguments in
    two halves), ``chunk_delay_s`` apart."""

    text: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list[ToolCall])
    delay_s: float = Field(default=0, ge=0)
    usage: tuple[int, int] | None = None
    chunk_delay_s: float = Field(default=0, ge=0)

    def words(self) -> list[str]:
        """The text in the parts it streams in: word by word, each with the space after it."""
        return re.split(r"(?<=\s)(?=\S)", self.text) if self.text else []

    def parts(self) -> list[tuple[str, str | None]]:
        """What a streamed call hands on, in order: ``(text, None)`` for each word, then
        ``(arguments_part, tool_name)`` for each half of each call's JSON arguments."""
        found: list[tuple[str, str | None]] = [(word, None) for word in self.words()]
        for call in self.tool_calls:
            found += [(half, call.name) for half in halves(json.dumps(call.arguments))]
        return found

    @model_validator(mode="after")
    def _says_something(self) -> Reply:
        if self.text is None and not self.tool_calls:
            raise ValueError("a reply has text and/or tool_calls")
        return self


def halves(text: str) -> tuple[str, str]:
    """A tool call's arguments as a streamed answer gives them: in two parts."""
    return text[: len(text) // 2], text[len(text) // 2 :]


@pydantic_dataclasses.dataclass(config=ConfigDict(extra="forbid", frozen=True, populate_by_name=True))
class Fail:
    """A failed call, after ``delay_s``: over HTTP the error answer itself (``status``, ``body``,
    ``headers``); in process a ``ModelCallError`` naming the status and the body's message. In a
    script file: ``{fail: STATUS, body: {...}}``. The helpers build the answers providers send."""

    status: int = Field(validation_alias=AliasChoices("fail", "status"), ge=400, le=599)
    body: JsonDict = field(default_factory=dict[str, Any])
    headers: dict[str, str] = field(default_factory=dict[str, str])
    delay_s: float = Field(default=0, ge=0)

    @property
    def message(self) -> str:
        error = self.body.get("error")
        found = cast(JsonDict, error).get("message") if isinstance(error, dict) else None
        return str(found) if found else json.dumps(self.body)

    @staticmethod
    def _error(status: int, message: str, type_: str, code: str, headers: dict[str, str] | None = None) -> Fail:
        return Fail(status, {"error": {"message": message, "type": type_, "param": None, "code": code}}, headers or {})

    @classmethod
    def rate_limit(cls, retry_after_s: float = 1.0) -> Fail:
        """429 with a ``retry-after`` header: wait and try again."""
        message = f"Rate limit reached. Please try again in {retry_after_s:g}s."
        return cls._error(
            429, message, "rate_limit_error", "rate_limit_exceeded", {"retry-after": f"{retry_after_s:g}"}
        )

    @classmethod
    def quota(cls) -> Fail:
        """429 ``insufficient_quota``: the key's money is gone; waiting does not help."""
        message = "You exceeded your current quota, please check your plan and billing details."
        return cls._error(429, message, "insufficient_quota", "insufficient_quota")

    @classmethod
    def auth(cls) -> Fail:
        """401: the key is wrong."""
        return cls._error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")

    @classmethod
    def context_too_long(cls, window: int, tokens: int) -> Fail:
        """400 ``context_length_exceeded``: the request is longer than the model's context window."""
        message = (
            f"This model's maximum context length is {window} tokens. However, your messages resulted in "
            f"{tokens} tokens. Please reduce the length of the messages."
        )
        return cls._error(400, message, "invalid_request_error", "context_length_exceeded")

    @classmethod
    def unavailable(cls) -> Fail:
        """503: the provider is overloaded."""
        return cls._error(503, "The server is overloaded or not ready yet.", "server_error", "service_unavailable")


@dataclass
class RecordedRequest:
    """One request as the model saw it. ``finished_at`` is ``None`` until it is answered; ``body``
    and ``headers`` are the HTTP server's (in process: no headers, and a body of ``{"stream": true}``
    for a streamed call, else empty)."""

    index: int
    match: str | None
    model: str
    messages: list[JsonDict]
    tools: list[JsonDict]
    body: JsonDict
    headers: dict[str, str]
    started_at: float
    finished_at: float | None = None
    status: int | None = None
    agent_id: str | None = None

    @property
    def task(self) -> str:
        """The text of the first user message: what a script's ``match`` is looked for in."""
        return next((_text_of(m) for m in self.messages if m.get("role") == "user"), "")

    @property
    def last_message(self) -> JsonDict:
        return self.messages[-1] if self.messages else {}

    @property
    def tool_names(self) -> list[str]:
        return [str(t.get("function", {}).get("name")) for t in self.tools]


StepFn: TypeAlias = Callable[[RecordedRequest], Reply | Fail | Awaitable[Reply | Fail]]
Step: TypeAlias = Reply | Fail | StepFn


def _step_kind(value: object) -> str | None:
    if isinstance(value, dict):
        return "fail-step" if {"fail", "status"} & set(cast(JsonDict, value)) else "reply-step"
    if isinstance(value, Reply | Fail):
        return "reply-step" if isinstance(value, Reply) else "fail-step"
    return "function-step" if callable(value) else None


_STEP = Annotated[
    Annotated[Reply, Tag("reply-step")] | Annotated[Fail, Tag("fail-step")] | Annotated[StepFn, Tag("function-step")],
    Discriminator(
        _step_kind,
        custom_error_type="step",
        custom_error_message=(
            "a step is {text, tool_calls, delay_s, usage, chunk_delay_s} or {fail: STATUS, body, headers, delay_s}"
        ),
    ),
]
_TAGS = frozenset({"reply-step", "fail-step", "function-step"})


class Script(BaseModel):
    """One agent's part: the steps for the requests whose first user message contains ``match``
    (and whose model is ``model``, when given: ``openai/x`` also matches the plain ``x``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str
    model: str | None = None
    steps: list[_STEP]

    def accepts(self, task: str, model: str) -> bool:
        wanted = self.model
        return self.match in task and (wanted is None or model in (wanted, wanted.split("/", 1)[-1]))


_SCRIPTS = TypeAdapter(list[Script])


class ScriptError(ModelCallError):
    """A request the scripts cannot answer: none matches it, several do, or its script is used up."""


class ScriptNotFollowed(AssertionError):
    """At the end: requests the scripts could not answer, or steps no request used."""


def _text_of(message: JsonDict) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(str(p.get("text", "")) for p in cast(list[JsonDict], content) if p.get("type") == "text")
    return "" if content is None else str(content)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _describe(step: Step) -> str:
    if isinstance(step, Reply):
        return f"Reply(text={step.text!r}, tool_calls={[c.name for c in step.tool_calls]})"
    if isinstance(step, Fail):
        return f"Fail({step.status})"
    return f"function {getattr(step, '__name__', repr(step))}"


@dataclass
class _Playing:
    script: Script
    used: int = 0


class ScriptPlayer:
    """Scripts, the requests they answered and what went wrong: thread-safe, shared by the
    in-process :class:`ScriptedModel` and the test suite's HTTP server.

    With a ``context_window``, a request of more tokens (counted as :attr:`RecordedRequest`
    usage is: about four characters a token of its messages and tools) is refused as a provider
    does (:meth:`Fail.context_too_long`) without taking a step of its script."""

    def __init__(self, scripts: Iterable[Script] = (), *, context_window: int | None = None) -> None:
        self.context_window = context_window
        self.refused: list[RecordedRequest] = []
        """The requests refused as longer than ``context_window``."""
        self._lock = threading.Lock()
        self._playing: list[_Playing] = []
        self._requests: list[RecordedRequest] = []
        self._failures: list[str] = []
        self._call_ids = itertools.count(1)
        for script in scripts:
            self.add(script)

    # -- scripts and records (the user's side) ----------------------------------------------------

    def add(self, script: Script) -> None:
        """Play ``script`` too; two scripts for the same match and model are refused."""
        with self._lock:
            if any(p.script.match == script.match and p.script.model == script.model for p in self._playing):
                raise ValueError(f"a script for {script.match!r} (model {script.model!r}) exists already")
            self._playing.append(_Playing(script))

    def script(self, match: str, steps: Sequence[Step], *, model: str | None = None) -> None:
        """Answer the agent whose first user message contains ``match`` with ``steps``, in order."""
        self.add(Script(match=match, model=model, steps=list(steps)))

    @property
    def scripts(self) -> list[Script]:
        with self._lock:
            return [p.script for p in self._playing]

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, match: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._requests if r.match == match]

    @property
    def failures(self) -> list[str]:
        """Every request the scripts could not answer, in order, as its error said."""
        with self._lock:
            return list(self._failures)

    def clear_failures(self) -> None:
        """Forget recorded failures, for a test that provoked them on purpose and checked them."""
        with self._lock:
            self._failures.clear()

    def unused(self) -> list[str]:
        """One line per script with steps no request used."""
        with self._lock:
            return [
                f"script {p.script.match!r}: {len(p.script.steps) - p.used} of {len(p.script.steps)} steps unused, "
                f"next {_describe(p.script.steps[p.used])}"
                for p in self._playing
                if p.used < len(p.script.steps)
            ]

    def assert_complete(self) -> None:
        """Raise :class:`ScriptNotFollowed` when a request went unanswered or a step unused."""
        problems = [f"unanswered: {f}" for f in self.failures] + self.unused()
        if problems:
            raise ScriptNotFollowed("scripted model steps left unused or requests unanswered:\n" + "\n".join(problems))

    # -- playing (the model's side) -----------------------------------------------------------------

    def _record(
        self,
        model: str,
        messages: list[JsonDict],
        tools: list[JsonDict],
        *,
        body: JsonDict | None = None,
        headers: dict[str, str] | None = None,
        agent_id: str | None = None,
    ) -> RecordedRequest:
        started_at = time.monotonic()
        with self._lock:
            index = len(self._requests)
            recorded = RecordedRequest(
                index, None, model, messages, tools, body or {}, headers or {}, started_at, agent_id=agent_id
            )
            self._requests.append(recorded)
        return recorded

    def _too_long(self, recorded: RecordedRequest) -> Fail | None:
        """The refusal of a request longer than the context window, if it is."""
        if self.context_window is None:
            return None
        tokens = _tokens(json.dumps(recorded.messages) + json.dumps(recorded.tools))
        if tokens <= self.context_window:
            return None
        with self._lock:
            self.refused.append(recorded)
        return Fail.context_too_long(self.context_window, tokens)

    def _fail(self, message: str) -> None:
        with self._lock:
            self._failures.append(message)

    def _next_step(self, recorded: RecordedRequest) -> Step:
        """Take the next step of the one script this request belongs to, or record and raise a
        :class:`ScriptError`."""
        task, model = recorded.task, recorded.model
        with self._lock:
            found = [p for p in self._playing if p.script.accepts(task, model)]
            if len(found) != 1:
                which = "no script matches" if not found else f"scripts {[p.script.match for p in found]} all match"
                error = ScriptError(f"request {recorded.index}: {which} model {model!r}, first user message {task!r}")
            elif found[0].used >= len(found[0].script.steps):
                recorded.match = found[0].script.match
                error = ScriptError(f"script for {recorded.match!r} exhausted after {found[0].used} steps")
            else:
                playing = found[0]
                recorded.match = playing.script.match
                playing.used += 1
                return playing.script.steps[playing.used - 1]
            self._failures.append(str(error))
        raise error

    async def _call(self, fn: StepFn, recorded: RecordedRequest) -> Reply | Fail:
        """The function step's answer; what it raises propagates."""
        result = cast(object, fn(recorded))  # checked below: the user's function may return anything
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, Reply | Fail):
            name = getattr(fn, "__name__", repr(fn))
            message = f"script {recorded.match!r}: function step {name} returned {result!r}, not Reply/Fail"
            self._fail(message)
            raise ScriptError(message)
        return result

    def _call_id(self) -> str:
        with self._lock:
            return f"call_{next(self._call_ids)}"

    @staticmethod
    def _usage(recorded: RecordedRequest, reply: Reply, calls_json: str) -> tuple[int, int]:
        if reply.usage is not None:
            return reply.usage
        prompt = _tokens(json.dumps(recorded.messages) + json.dumps(recorded.tools))
        return prompt, _tokens((reply.text or "") + calls_json)


class ScriptedModel(ScriptPlayer):
    """The scripts as a :class:`~dispatch.hub.llm.types.ModelClient`, in process. As a context
    manager it checks, on a clean exit, that every step was used and every request answered."""

    async def complete(
        self,
        model: str,
        messages: Sequence[JsonDict],
        tools: Sequence[JsonDict],
        *,
        agent_id: str | None = None,
        on_delta: DeltaSink | None = None,
    ) -> Completion:
        streamed = {"stream": True} if on_delta is not None else None  # as the HTTP body would say
        recorded = self._record(model, list(messages), list(tools), body=streamed, agent_id=agent_id)
        refusal = self._too_long(recorded)
        if refusal is not None:
            recorded.status, recorded.finished_at = refusal.status, time.monotonic()
            raise ContextTooLong(f"{model}: the scripted model answered {refusal.status}: {refusal.message}")
        step = self._next_step(recorded)
        answer = step if isinstance(step, Reply | Fail) else await self._call(step, recorded)
        if answer.delay_s:
            await anyio.sleep(answer.delay_s)
        if isinstance(answer, Fail):
            recorded.status, recorded.finished_at = answer.status, time.monotonic()
            raise ModelCallError(f"{model}: the scripted model answered {answer.status}: {answer.message}")
        if on_delta is not None:
            await self._stream(answer, on_delta)
        calls = [
            ToolCallRequest(id=self._call_id(), name=c.name, arguments=json.dumps(c.arguments))
            for c in answer.tool_calls
        ]
        prompt, completion = self._usage(recorded, answer, "".join(c.arguments for c in calls))
        usage = Usage(prompt_tokens=prompt, completion_tokens=completion, cost_usd=0.0, calls=1)
        recorded.status, recorded.finished_at = 200, time.monotonic()  # the answer is ready
        latency_s = recorded.finished_at - recorded.started_at
        return Completion(text=answer.text, tool_calls=calls, usage=usage, model=model, latency_s=latency_s)

    @staticmethod
    async def _stream(reply: Reply, on_delta: DeltaSink) -> None:
        """Hand on the reply's parts, ``chunk_delay_s`` apart, coalesced as a streamed call's are."""

        def hand_on(deltas: list[Delta]) -> None:
            for delta in deltas:
                on_delta(delta)

        coalescer = Coalescer(hand_on)
        for index, (text, tool) in enumerate(reply.parts()):
            if index and reply.chunk_delay_s:
                await anyio.sleep(reply.chunk_delay_s)
            coalescer.add(text, tool)
        coalescer.close()

    @classmethod
    def from_file(cls, path: Path) -> ScriptedModel:
        """The scripts of a YAML or JSON file (:func:`load_scripts`)."""
        return cls(load_scripts(path))

    def __enter__(self) -> ScriptedModel:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.assert_complete()


def _where(loc: tuple[str | int, ...]) -> str:
    """``(0, "steps", 1, "reply-step", "tool_calls", 0, "name")`` -> ``entry 1, step 2: tool_calls.0.name``."""
    parts = [p for p in loc if p not in _TAGS]
    head = [f"entry {parts[0] + 1}"] if parts and isinstance(parts[0], int) else []
    rest = parts[1:] if head else parts
    if rest[:1] == ["steps"] and len(rest) > 1 and isinstance(rest[1], int):
        head.append(f"step {rest[1] + 1}")
        rest = rest[2:]
    where = ", ".join(head)
    field_path = ".".join(str(p) for p in rest)
    return f"{where}: {field_path}" if where and field_path else where or field_path or "(top level)"


def load_scripts(path: Path) -> list[Script]:
    """The scripts of a YAML (or JSON) file: a list of ``{match, model?, steps}``. A mistake raises
    :class:`~dispatch.hub.errors.ConfigError` naming the file, the entry, the step and the field."""
    try:
        data: object = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of {{match, steps}} entries, got {type(data).__name__}")
    try:
        return _SCRIPTS.validate_python(data)
    except ValidationError as error:
        lines = [f"{path}: {_where(e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}" for e in error.errors()]
        raise ConfigError("\n".join(lines)) from None
