"""The served hub's event loop runs the API's work before the agents' (dispatch.hub.loop): a request
to a hub whose agents keep its loop busy is answered within the turn of the loop in progress, not
after the agents' next steps; the API's own callbacks keep their order; an agent started by a
request queues as any agent does."""

from __future__ import annotations

import asyncio
import contextvars
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dispatch.hub.agents.spec import AgentSpec
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.ids import new_id
from dispatch.hub.llm.scripted import Reply, Script, ScriptedModel
from dispatch.hub.llm.types import Completion
from dispatch.hub.loop import SERVES_API, ApiFirstLoop, not_serving_api, serving_api
from dispatch.hub.policy.grants import Grants


def _api_context() -> contextvars.Context:
    context = contextvars.copy_context()
    context.run(SERVES_API.set, True)
    return context


def _run_on_the_hubs_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=ApiFirstLoop) as runner:
        runner.run(main())


def test_the_apis_callbacks_run_before_the_queued_ones_and_in_their_own_order() -> None:
    ran: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for index in range(3):
            loop.call_soon(ran.append, f"agent {index}")
        for index in range(2):
            loop.call_soon(ran.append, f"api {index}", context=_api_context())
        loop.call_soon(ran.append, "agent 3")
        await asyncio.sleep(0.01)

    _run_on_the_hubs_loop(main)
    assert ran == ["api 0", "api 1", "agent 0", "agent 1", "agent 2", "agent 3"]


def test_a_callback_of_the_api_that_queues_itself_until_other_work_ran_lets_that_work_run() -> None:
    # as anyio delivers a cancellation: again and again until the tasks it cancels have run
    ran: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def waiting(rounds: int) -> None:
            if "agent" in ran or rounds == 10_000:
                ran.append(f"waited {rounds} times")
                return
            loop.call_soon(waiting, rounds + 1, context=_api_context())

        loop.call_soon(waiting, 0, context=_api_context())
        loop.call_soon(ran.append, "agent")
        await asyncio.sleep(0.01)

    _run_on_the_hubs_loop(main)
    assert ran[0] == "agent" and ran[1] in ("waited 1 times", "waited 2 times"), ran


def test_a_callback_of_the_api_from_another_thread_joins_the_end_of_the_queue() -> None:
    ran: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for index in range(3):
            loop.call_soon(ran.append, f"agent {index}")
        thread = threading.Thread(
            target=lambda: loop.call_soon_threadsafe(ran.append, "api from a thread", context=_api_context())
        )
        thread.start()
        thread.join()
        await asyncio.sleep(0.01)

    _run_on_the_hubs_loop(main)
    assert ran == ["agent 0", "agent 1", "agent 2", "api from a thread"]


BUSY_AGENTS = 200


def _steps_a_request_waited(requests: int) -> list[int]:
    """Serve a small API with uvicorn inside :func:`serving_api`, on the hub's loop, while
    ``BUSY_AGENTS`` tasks each take a step (a count, and a sleep that lets the client's thread run)
    every turn of the loop; from a client in
    another thread, send ``requests`` requests over one connection. For each, how many agents'
    steps ran between the client sending it and the handler starting."""
    steps = 0
    waited: list[int] = []

    async def handle(request: Request) -> JSONResponse:
        return JSONResponse({"steps": steps})

    async def busy() -> None:
        nonlocal steps
        while True:
            steps += 1
            time.sleep(0.0001)  # noqa: ASYNC251 (a step's work, blocking as work does; the client's thread runs meanwhile)
            await asyncio.sleep(0)

    def client(port: int, done: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> None:
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                http.get("/")  # the connection opened, out of the count
                for _ in range(requests):
                    sent = steps
                    waited.append(http.get("/").json()["steps"] - sent)
        finally:
            loop.call_soon_threadsafe(done.set_result, None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        app = Starlette(routes=[Route("/", handle)])
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        with not_serving_api():
            agents = [asyncio.create_task(busy()) for _ in range(BUSY_AGENTS)]
        with serving_api():
            serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        done: asyncio.Future[None] = loop.create_future()
        threading.Thread(target=client, args=(sock.getsockname()[1], done, loop)).start()
        await done
        server.should_exit = True
        await serving
        for agent in agents:
            agent.cancel()
        await asyncio.gather(*agents, return_exceptions=True)

    _run_on_the_hubs_loop(main)
    return waited


def test_a_request_is_served_within_the_turn_in_progress_however_busy_the_agents_keep_the_loop() -> None:
    # In asyncio's own order a request's bytes are read after every step queued in the turn before
    # (BUSY_AGENTS of them) and its task runs after every step queued in the turn that read them,
    # and so on: about three turns of steps (548-599 in twenty requests). Served first, its bytes are read
    # first in the turn after the one in progress and its task runs first in the next: what is left
    # of the turn in progress, and one more (305-399 in twenty).
    waited = _steps_a_request_waited(20)
    assert len(waited) == 20
    assert max(waited) < 2.4 * BUSY_AGENTS, waited


class _NotingModel(ScriptedModel):
    """The scripted model, noting whether each call ran marked as the API's work."""

    marked: list[bool]

    async def complete(self, *args: Any, **kwargs: Any) -> Completion:
        self.marked.append(SERVES_API.get())
        return await super().complete(*args, **kwargs)


@pytest.mark.anyio
async def test_an_agent_started_by_a_request_queues_as_any_agent(tmp_path: Path) -> None:
    model = _NotingModel([Script(match="[noted]", steps=[Reply(text="done")])])
    model.marked = []
    with model:
        async with AgentTree(tmp_path, model) as tree:
            spec = AgentSpec(id=new_id(), name="a", task="[noted] go", model="m", grants=Grants.everything())
            with serving_api():  # as a POST /api/agents starts one
                agent = tree.start(spec)
            await agent.finished.wait()
    assert model.marked == [False]
