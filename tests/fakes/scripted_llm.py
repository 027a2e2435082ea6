"""The scripted model over HTTP: an OpenAI-compatible server on 127.0.0.1 that answers each agent
from a script, so tests keep the real litellm path under test: the model is faked at the HTTP
boundary, never by replacing Dispatch's own model client.

Its room is the tests' model boundary, nothing more: ``POST /v1/chat/completions`` (JSON or SSE,
with tools and tool calls), ``GET /v1/models`` and, for litellm's ``anthropic/`` provider with
:attr:`ScriptedLLM.anthropic_base_url` as its base URL, Anthropic's ``POST /v1/messages`` (JSON or
its stream events; a streamed reply's parts come ``chunk_delay_s`` apart on either face),
served by uvicorn on a free port in a background thread with its own event loop, so sync and async
tests share it.

Both faces play a provider's prompt cache (:mod:`tests.fakes.prompt_cache`): ``/v1/messages``
always, as Anthropic's, caching up to the request's ``cache_control`` marks and answering with
``cache_read_input_tokens`` and ``cache_creation_input_tokens``; the OpenAI face when started with
``prompt_cache=True``, as OpenAI's automatic cache, answering with
``prompt_tokens_details.cached_tokens``. A ``/v1/messages`` request is recorded with its messages
and tools in OpenAI's format, so scripts read it as any other; its ``body`` is Anthropic's.

The scripts, their steps and how a request finds its script are the shipped in-process model's
(:mod:`dispatch.hub.llm.scripted`): a :class:`Reply`, a :class:`Fail` (here an HTTP error answer)
or a function of the :class:`RecordedRequest`. No script, several scripts, an exhausted script or
a function step that raises answer HTTP 500 *and* land in :attr:`ScriptedLLM.failures`;
:meth:`ScriptedLLM.assert_complete` fails on those and on unused steps. With ``context_window``
it refuses a request of more tokens as OpenAI does (400 ``context_length_exceeded``), before
any script step is taken.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from dispatch.hub.llm.scripted import (
    Fail,
    RecordedRequest,
    Reply,
    Script,
    ScriptError,
    ScriptPlayer,
    Step,
    StepFn,
    ToolCall,
    halves,
)
from dispatch.hub.llm.types import JsonDict
from tests.fakes.prompt_cache import CacheUse, PromptCache, anthropic_blocks, openai_blocks, openai_request

__all__ = ["Fail", "RecordedRequest", "Reply", "Script", "ScriptedLLM", "Step", "StepFn", "ToolCall"]


class ScriptedLLM(ScriptPlayer):
    """The server and its scripts. ``start()`` / ``stop()``, or use it as a context manager."""

    def __init__(
        self,
        scripts: Iterable[Script] = (),
        *,
        prompt_cache: bool = False,
        context_window: int | None = None,
        streams: bool = True,
    ) -> None:
        super().__init__(scripts, context_window=context_window)
        self.streams = streams
        """False: the OpenAI face refuses a streamed request (400, taking no step), as some endpoints do."""
        self.refused_streams = 0
        self.prompt_cache = PromptCache()
        self._openai_cache = prompt_cache
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self._chat)
        self.app.get("/v1/models")(self._models)
        self.app.post("/v1/messages")(self._messages)
        self.app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])(self._unexpected)

    @property
    def base_url(self) -> str:
        if not self._port:
            raise RuntimeError("the scripted model server is not started")
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The base URL of the Anthropic face: litellm's ``anthropic/`` provider adds ``/v1/messages``."""
        return self.base_url.removesuffix("/v1")

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

    def _error(self, message: str, status: int = 500) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "scripted_llm_error", "code": None}}, status)

    async def _unexpected(self, request: Request) -> Response:
        message = f"unexpected request {request.method} {request.url.path}"
        self._fail(message)
        return self._error(message, 404)

    async def _models(self) -> JsonDict:
        names = sorted({s.model.split("/", 1)[-1] for s in self.scripts if s.model} or {"scripted"})
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "scripted"} for n in names],
        }

    async def _answer(self, recorded: RecordedRequest) -> Reply | Fail:
        """The step's answer; a function step that raises is a recorded failure (HTTP cannot carry it)."""
        step = self._next_step(recorded)
        if isinstance(step, Reply | Fail):
            return step
        try:
            return await self._call(step, recorded)
        except ScriptError:
            raise
        except Exception as error:
            name = getattr(step, "__name__", repr(step))
            message = f"script {recorded.match!r}: function step {name} raised {error!r}"
            self._fail(message)
            raise ScriptError(message) from error

    async def _chat(self, request: Request) -> Response:
        try:
            body: JsonDict = await request.json()
        except ValueError:
            self._fail("request body is not JSON")
            return self._error("request body is not JSON")
        messages: list[JsonDict] = list(body.get("messages") or [])
        tools: list[JsonDict] = list(body.get("tools") or [])
        if body.get("stream") and not self.streams:
            self.refused_streams += 1
            return self._error("stream is not supported for this model", 400)
        recorded = self._record(str(body.get("model", "")), messages, tools, body=body, headers=dict(request.headers))
        refusal = self._too_long(recorded)
        try:
            step = refusal or await self._answer(recorded)
        except ScriptError as error:
            response: Response = self._error(str(error))
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

    def _usage_json(self, recorded: RecordedRequest, reply: Reply, calls: list[JsonDict]) -> JsonDict:
        prompt, completion = self._usage(recorded, reply, json.dumps(calls))
        usage: JsonDict = {"prompt_tokens": prompt, "completion_tokens": completion}
        usage["total_tokens"] = prompt + completion
        if self._openai_cache:
            cached = self.prompt_cache.use(openai_blocks(recorded.body), explicit=False).read
            usage["prompt_tokens_details"] = {"cached_tokens": min(cached, prompt)}
        return usage

    # -- the Anthropic Messages API face --------------------------------------------------------

    def _anthropic_error(self, message: str, status: int = 500) -> JSONResponse:
        return JSONResponse({"type": "error", "error": {"type": "api_error", "message": message}}, status)

    async def _messages(self, request: Request) -> Response:
        try:
            body: JsonDict = await request.json()
        except ValueError:
            self._fail("request body is not JSON")
            return self._anthropic_error("request body is not JSON")
        messages, tools = openai_request(body)
        recorded = self._record(str(body.get("model", "")), messages, tools, body=body, headers=dict(request.headers))
        try:
            step = await self._answer(recorded)
        except ScriptError as error:
            response: Response = self._anthropic_error(str(error))
        else:
            await asyncio.sleep(step.delay_s)
            if isinstance(step, Fail):
                response = JSONResponse(step.body, step.status, step.headers)
            else:
                cache = self.prompt_cache.use(anthropic_blocks(body), explicit=True)
                message = self._anthropic_message(recorded, step, cache)
                if body.get("stream"):
                    recorded.status = 200
                    events = self._anthropic_sse(recorded, step, message)
                    return StreamingResponse(events, media_type="text/event-stream")
                response = JSONResponse(message)
        recorded.status, recorded.finished_at = response.status_code, time.monotonic()
        return response

    def _anthropic_message(self, recorded: RecordedRequest, reply: Reply, cache: CacheUse) -> JsonDict:
        calls = [
            {"type": "tool_use", "id": f"toolu_{self._call_id()}", "name": c.name, "input": c.arguments}
            for c in reply.tool_calls
        ]
        _, completion = self._usage(recorded, reply, json.dumps(calls))
        prompt = reply.usage[0] if reply.usage is not None else cache.total
        content = ([{"type": "text", "text": reply.text}] if reply.text else []) + calls
        return {
            "id": f"msg_{recorded.index}",
            "type": "message",
            "role": "assistant",
            "model": recorded.model,
            "content": content,
            "stop_reason": "tool_use" if calls else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": max(prompt - cache.read - cache.written, 0),
                "output_tokens": completion,
                "cache_creation_input_tokens": cache.written,
                "cache_read_input_tokens": cache.read,
            },
        }

    async def _anthropic_sse(self, recorded: RecordedRequest, reply: Reply, message: JsonDict) -> AsyncIterator[str]:
        """The message as Anthropic's stream events: its usage in ``message_start`` (the output
        tokens in ``message_delta``), text word by word, each tool call's input JSON in two parts,
        ``reply.chunk_delay_s`` apart."""

        def event(kind: str, **fields: Any) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n"

        usage: JsonDict = message["usage"]
        yield event(
            "message_start",
            message=message | {"content": [], "stop_reason": None, "usage": usage | {"output_tokens": 1}},
        )
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                yield event("content_block_start", index=index, content_block={"type": "text", "text": ""})
                for word in reply.words():
                    await asyncio.sleep(reply.chunk_delay_s)
                    yield event("content_block_delta", index=index, delta={"type": "text_delta", "text": word})
            else:
                yield event("content_block_start", index=index, content_block=block | {"input": {}})
                for part in halves(json.dumps(block["input"])):
                    await asyncio.sleep(reply.chunk_delay_s)
                    yield event(
                        "content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": part}
                    )
            yield event("content_block_stop", index=index)
        stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        yield event("message_delta", delta=stop, usage={"output_tokens": usage["output_tokens"]})
        yield event("message_stop")
        recorded.finished_at = time.monotonic()

    def _tool_calls(self, reply: Reply) -> list[JsonDict]:
        return [
            {
                "id": self._call_id(),
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in reply.tool_calls
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
        return self._envelope(recorded, "chat.completion", [choice]) | {
            "usage": self._usage_json(recorded, reply, calls)
        }

    async def _sse(self, recorded: RecordedRequest, reply: Reply, include_usage: bool) -> AsyncIterator[str]:
        """The reply as OpenAI stream chunks: text word by word, each tool call's arguments in two
        parts, ``reply.chunk_delay_s`` apart."""
        calls = self._tool_calls(reply)

        def chunk(delta: JsonDict, finish: str | None = None, **extra: Any) -> str:
            choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
            return f"data: {json.dumps(self._envelope(recorded, 'chat.completion.chunk', choices) | extra)}\n\n"

        yield chunk({"role": "assistant", "content": "" if reply.text else None})
        for word in reply.words():
            await asyncio.sleep(reply.chunk_delay_s)
            yield chunk({"content": word})
        for index, call in enumerate(calls):
            yield chunk({"tool_calls": [{"index": index, **call, "function": {**call["function"], "arguments": ""}}]})
            for part in halves(call["function"]["arguments"]):
                await asyncio.sleep(reply.chunk_delay_s)
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
        yield chunk({}, "tool_calls" if calls else "stop")
        if include_usage:
            yield chunk({}, usage=self._usage_json(recorded, reply, calls))
        recorded.finished_at = time.monotonic()
        yield "data: [DONE]\n\n"
