"""The scripted model: an OpenAI-compatible HTTP server on 127.0.0.1 that answers each agent from
a script, so tests keep the real litellm path under test: the model is faked at the HTTP boundary,
never by replacing Dispatch's own model client.

Its room is the tests' model boundary, nothing more: ``POST /v1/chat/completions`` (JSON or SSE,
with tools and tool calls) and ``GET /v1/models``, served by uvicorn on a free port in a
background thread with its own event loop, so sync and async tests share it.

A request belongs to the one script whose ``match`` string occurs in its first user message (the
agent's task), optionally narrowed by model name; each request of that agent takes the next step:
a :class:`Reply`, a :class:`Fail` (an HTTP error), or a function of the :class:`RecordedRequest`.
It fails loudly: no script, several scripts or an exhausted script answer HTTP 500 *and* land in
:attr:`ScriptedLLM.failures`; :meth:`ScriptedLLM.assert_complete` fails on unused steps.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, cast

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

JsonDict: TypeAlias = dict[str, Any]

__all__ = ["Fail", "RecordedRequest", "Reply", "ScriptedLLM", "Step", "StepFn", "ToolCall"]


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model makes; the server gives it an id (``call_1``, ...) and JSON-encodes
    the arguments."""

    name: str
    arguments: JsonDict = field(default_factory=dict[str, Any])


@dataclass(frozen=True)
class Reply:
    """A successful answer: text, tool calls or both, after ``delay_s`` (awaited, never blocking).
    ``usage`` is ``(prompt_tokens, completion_tokens)``; by default about four characters a token."""

    text: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list[ToolCall])
    delay_s: float = 0
    usage: tuple[int, int] | None = None


@dataclass(frozen=True)
class Fail:
    """An HTTP error answer, after ``delay_s``; the helpers build the ones providers send."""

    status: int
    body: JsonDict
    headers: dict[str, str] = field(default_factory=dict[str, str])
    delay_s: float = 0

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
    def unavailable(cls) -> Fail:
        """503: the provider is overloaded."""
        return cls._error(503, "The server is overloaded or not ready yet.", "server_error", "service_unavailable")


@dataclass
class RecordedRequest:
    """One request as the model saw it. ``finished_at`` is ``None`` until the response is sent."""

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

    @property
    def task(self) -> str:
        """The text of the first user message: what attribution matches against."""
        return next((_text_of(m) for m in self.messages if m.get("role") == "user"), "")

    @property
    def last_message(self) -> JsonDict:
        return self.messages[-1] if self.messages else {}

    @property
    def tool_names(self) -> list[str]:
        return [str(t.get("function", {}).get("name")) for t in self.tools]


StepFn: TypeAlias = Callable[[RecordedRequest], Reply | Fail | Awaitable[Reply | Fail]]
Step: TypeAlias = Reply | Fail | StepFn


class ScriptError(Exception):
    """The request cannot be answered from the scripts; answered with HTTP 500 and recorded."""


@dataclass
class _Script:
    match: str
    model: str | None
    steps: list[Step]
    used: int = 0

    def accepts(self, task: str, model: str) -> bool:
        wanted = self.model
        return self.match in task and (wanted is None or model in (wanted, wanted.split("/", 1)[-1]))


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


class ScriptedLLM:
    """The server and its scripts. ``start()`` / ``stop()``, or use it as a context manager."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: list[_Script] = []
        self._requests: list[RecordedRequest] = []
        self._failures: list[str] = []
        self._call_ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self._chat)
        self.app.get("/v1/models")(self._models)
        self.app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])(self._unexpected)

    # -- scripts and records (the test's side) --------------------------------------------------

    def script(self, match: str, steps: list[Step], *, model: str | None = None) -> None:
        """Answer the agent whose first user message contains ``match`` with ``steps``, in order."""
        with self._lock:
            if any(s.match == match and s.model == model for s in self._scripts):
                raise ValueError(f"a script for {match!r} (model {model!r}) exists already")
            self._scripts.append(_Script(match, model, list(steps)))

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("the scripted model server is not started")
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, match: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._requests if r.match == match]

    @property
    def failures(self) -> list[str]:
        with self._lock:
            return list(self._failures)

    def clear_failures(self) -> None:
        """Forget recorded failures, for a test that provoked them on purpose and checked them."""
        with self._lock:
            self._failures.clear()

    def assert_complete(self) -> None:
        """Fail when a script has steps no request consumed."""
        with self._lock:
            unused = [
                f"script {s.match!r}: {len(s.steps) - s.used} of {len(s.steps)} steps unused, "
                f"next {_describe(s.steps[s.used])}"
                for s in self._scripts
                if s.used < len(s.steps)
            ]
        if unused:
            raise AssertionError("scripted model steps left unused:\n" + "\n".join(unused))

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, port: int = 0) -> ScriptedLLM:
        """Serve on 127.0.0.1 at ``port`` (0: a free one) in a background thread."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
        )
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name="scripted-llm", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the scripted model server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> ScriptedLLM:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- the server's side ----------------------------------------------------------------------

    def _fail(self, message: str, status: int = 500) -> JSONResponse:
        with self._lock:
            self._failures.append(message)
        return JSONResponse({"error": {"message": message, "type": "scripted_llm_error", "code": None}}, status)

    async def _unexpected(self, request: Request) -> Response:
        return self._fail(f"unexpected request {request.method} {request.url.path}", 404)

    async def _models(self) -> JsonDict:
        with self._lock:
            names = sorted({s.model.split("/", 1)[-1] for s in self._scripts if s.model} or {"scripted"})
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "scripted"} for n in names],
        }

    def _record(self, body: JsonDict, headers: dict[str, str], started_at: float) -> RecordedRequest:
        messages: list[JsonDict] = list(body.get("messages") or [])
        tools: list[JsonDict] = list(body.get("tools") or [])
        model = str(body.get("model", ""))
        with self._lock:
            recorded = RecordedRequest(len(self._requests), None, model, messages, tools, body, headers, started_at)
            self._requests.append(recorded)
        return recorded

    def _next_step(self, recorded: RecordedRequest) -> Step:
        """Take the next step of the one script this request belongs to, or raise ScriptError."""
        task, model = recorded.task, recorded.model
        with self._lock:
            found = [s for s in self._scripts if s.accepts(task, model)]
            if len(found) != 1:
                which = "no script matches" if not found else f"scripts {[s.match for s in found]} all match"
                raise ScriptError(f"request {recorded.index}: {which} model {model!r}, first user message {task!r}")
            script = found[0]
            recorded.match = script.match
            if script.used >= len(script.steps):
                raise ScriptError(f"script for {script.match!r} exhausted after {len(script.steps)} steps")
            script.used += 1
            return script.steps[script.used - 1]

    async def _chat(self, request: Request) -> Response:
        started_at = time.monotonic()
        try:
            body: JsonDict = await request.json()
        except ValueError:
            return self._fail("request body is not JSON")
        recorded = self._record(body, dict(request.headers), started_at)
        try:
            step = self._next_step(recorded)
            if not isinstance(step, Reply | Fail):
                step = await self._call(step, recorded)
        except ScriptError as error:
            response: Response = self._fail(str(error))
        else:
            await asyncio.sleep(step.delay_s)
            if isinstance(step, Fail):
                response = JSONResponse(step.body, step.status, step.headers)
            elif body.get("stream"):
                options: JsonDict = body.get("stream_options") or {}
                include_usage = bool(options.get("include_usage"))
                recorded.status = 200
                return StreamingResponse(self._sse(recorded, step, include_usage), media_type="text/event-stream")
            else:
                response = JSONResponse(self._completion(recorded, step))
        recorded.status, recorded.finished_at = response.status_code, time.monotonic()
        return response

    async def _call(self, fn: StepFn, recorded: RecordedRequest) -> Reply | Fail:
        name = getattr(fn, "__name__", repr(fn))
        try:
            result = cast(object, fn(recorded))  # checked below: the test's function may return anything
            if inspect.isawaitable(result):
                result = await result
        except Exception as error:
            raise ScriptError(f"script {recorded.match!r}: function step {name} raised {error!r}") from error
        if not isinstance(result, Reply | Fail):
            raise ScriptError(f"script {recorded.match!r}: function step {name} returned {result!r}, not Reply/Fail")
        return result

    def _usage(self, recorded: RecordedRequest, reply: Reply, calls: list[JsonDict]) -> JsonDict:
        if reply.usage is not None:
            prompt, completion = reply.usage
        else:
            prompt = _tokens(json.dumps(recorded.messages) + json.dumps(recorded.tools))
            completion = _tokens((reply.text or "") + json.dumps(calls))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _tool_calls(self, reply: Reply) -> list[JsonDict]:
        with self._lock:
            ids = [f"call_{next(self._call_ids)}" for _ in reply.tool_calls]
        return [
            {"id": i, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for i, c in zip(ids, reply.tool_calls, strict=True)
        ]

    def _envelope(self, recorded: RecordedRequest, kind: str, choices: list[JsonDict]) -> JsonDict:
        envelope = {"id": f"chatcmpl-{recorded.index}", "object": kind, "created": int(time.time())}
        return envelope | {"model": recorded.model, "choices": choices}

    def _completion(self, recorded: RecordedRequest, reply: Reply) -> JsonDict:
        calls = self._tool_calls(reply)
        message: JsonDict = {"role": "assistant", "content": reply.text}
        if calls:
            message["tool_calls"] = calls
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
        return self._envelope(recorded, "chat.completion", [choice]) | {"usage": self._usage(recorded, reply, calls)}

    async def _sse(self, recorded: RecordedRequest, reply: Reply, include_usage: bool) -> AsyncIterator[str]:
        """The reply as OpenAI stream chunks: text word by word, each tool call's arguments in two parts."""
        calls = self._tool_calls(reply)

        def chunk(delta: JsonDict, finish: str | None = None, **extra: Any) -> str:
            choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
            return f"data: {json.dumps(self._envelope(recorded, 'chat.completion.chunk', choices) | extra)}\n\n"

        yield chunk({"role": "assistant", "content": "" if reply.text else None})
        for word in re.split(r"(?<=\s)(?=\S)", reply.text) if reply.text else []:
            yield chunk({"content": word})
        for index, call in enumerate(calls):
            yield chunk({"tool_calls": [{"index": index, **call, "function": {**call["function"], "arguments": ""}}]})
            arguments: str = call["function"]["arguments"]
            for part in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
        yield chunk({}, "tool_calls" if calls else "stop")
        if include_usage:
            yield chunk({}, usage=self._usage(recorded, reply, calls))
        recorded.finished_at = time.monotonic()
        yield "data: [DONE]\n\n"
