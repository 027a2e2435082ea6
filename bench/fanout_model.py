"""The fan-out benchmarks' model: an OpenAI-compatible server, in a process of its own, that makes
every agent of a ``1 → N → M`` tree play its part, each answer after a fixed latency.

The part follows from the agent's task (its first user message):

- ``fan out`` (the top agent) and ``part I of level 1`` (a child): the first answer summons the
  children (``part I.J of level 2`` for a child's), the child summoned with ``grants: {summon:
  true}``; every later answer is the text ``done``, so the hub waits for the children and asks
  again as each reports, and the agent reports once all have;
- ``part I.J of level 2`` (a leaf): its first answer is held until the benchmark posts
  ``/release`` (once every agent exists, so all are alive at once); then it calls
  ``check_messages`` ``--rounds`` times, one per answer, and answers ``done``;
- ``read K times`` (the fleet's agents, :mod:`bench.fleet`): ``read_file`` of ``notes.txt``, one
  per answer, K times, then ``done``. Their requests are kept, for ``GET /bodies`` to hand back
  (the fleet replays them as bare HTTP posts, its floor).

``python -m bench.fanout_model --port P --children N --latency-ms L --rounds R``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

JsonDict = dict[str, Any]
LEAF = re.compile(r"part \d+\.\d+ of level 2")
CHILD = re.compile(r"part (\d+) of level 1")
READS = re.compile(r"read (\d+) times")


class FanoutModel:
    """The answers; ``release`` lets the held leaves go on."""

    def __init__(self, children: int, grandchildren: int, latency_s: float, rounds: int) -> None:
        self.children = children
        self.grandchildren = grandchildren
        self.latency_s = latency_s
        self.rounds = rounds
        self.released = asyncio.Event()
        self.calls = 0
        self.bodies: list[JsonDict] = []
        """The requests of the agents that read (the fleet's long agent's transcript, call by call)."""
        self._ids = itertools.count(1)

    def _call(self, name: str, arguments: JsonDict) -> JsonDict:
        return {
            "id": f"call_{next(self._ids)}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }

    def _summons(self, task: str) -> list[JsonDict]:
        child = CHILD.search(task)
        if child is None:  # the top agent
            return [
                self._call("summon", {"task": f"part {i} of level 1", "name": f"c{i}", "grants": {"summon": True}})
                for i in range(self.children)
            ]
        parent = child[1]
        return [
            self._call("summon", {"task": f"part {parent}.{j} of level 2", "name": f"l{parent}-{j}"})
            for j in range(self.grandchildren)
        ]

    async def answer(self, messages: list[JsonDict]) -> tuple[str | None, list[JsonDict]]:
        task = str(messages[1].get("content", "")) if len(messages) > 1 else ""
        answered = sum(1 for m in messages if m.get("role") == "assistant")
        if reads := READS.search(task):
            if answered < int(reads[1]):
                return None, [self._call("read_file", {"path": "notes.txt"})]
            return "done", []
        if LEAF.search(task):
            if answered == 0:
                await self.released.wait()
            if answered < self.rounds:
                return None, [self._call("check_messages", {})]
            return "done", []
        if answered == 0 and (CHILD.search(task) or self.grandchildren):
            return None, self._summons(task)
        return "done", []

    async def chat(self, request: Request) -> Response:
        body: JsonDict = await request.json()
        messages = list(body.get("messages") or [])
        text, calls = await self.answer(messages)
        reads = READS.search(str(messages[1].get("content", ""))) if len(messages) > 1 else None
        if reads and int(reads[1]) > 1:
            self.bodies.append(body)  # a long reader's (not the fleet's one-read agents)
        await asyncio.sleep(self.latency_s)
        self.calls += 1
        message: JsonDict = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = calls
        if body.get("stream"):
            return StreamingResponse(
                self._chunks(str(body.get("model", "bench")), message), media_type="text/event-stream"
            )
        return JSONResponse(
            {
                "id": f"chatcmpl-{self.calls}",
                "object": "chat.completion",
                "created": 0,
                "model": str(body.get("model", "bench")),
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )

    async def _chunks(self, model: str, message: JsonDict) -> AsyncIterator[str]:
        """The answer streamed as OpenAI does: a chunk per word, one per tool call, then the usage."""
        head = {"id": f"chatcmpl-{self.calls}", "object": "chat.completion.chunk", "created": 0, "model": model}

        def chunk(delta: JsonDict, finish: str | None = None, **extra: Any) -> str:
            choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
            return f"data: {json.dumps(head | {'choices': choices} | extra)}\n\n"

        calls: list[JsonDict] = message.get("tool_calls") or []
        for word in str(message["content"] or "").split(" ") if message["content"] else []:
            yield chunk({"content": word})
        for index, call in enumerate(calls):
            yield chunk({"tool_calls": [{"index": index, **call}]})
        yield chunk({}, "tool_calls" if calls else "stop")
        yield chunk({}, usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
        yield "data: [DONE]\n\n"

    async def release(self, _: Request) -> Response:
        self.released.set()
        return JSONResponse({"released": True, "calls": self.calls})

    async def stats(self, _: Request) -> Response:
        return JSONResponse({"calls": self.calls})

    async def kept_bodies(self, _: Request) -> Response:
        return JSONResponse(self.bodies)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/release", self.release, methods=["POST"]),
                Route("/stats", self.stats, methods=["GET"]),
                Route("/bodies", self.kept_bodies, methods=["GET"]),
            ]
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout_model", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--children", type=int, default=20)
    parser.add_argument("--grandchildren", type=int, default=25)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=3, help="check_messages calls of each leaf")
    args = parser.parse_args()
    model = FanoutModel(args.children, args.grandchildren, args.latency_ms / 1000, args.rounds)
    uvicorn.run(model.app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
