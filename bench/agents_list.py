"""What one ``GET /api/agents`` costs the hub with a whole fan-out alive: its CPU, and the longest
piece of it that holds the event loop (every other task of the hub waits that long).

The hub runs in this process (:meth:`Hub.open` and the API's app, as ``dispatch serve`` makes
them), against the fan-out model (:mod:`bench.fanout_model`, its own process) whose leaves are
held at their first call: once all ``1 + N + N×M`` agents exist (521 by default) and the tree is
still (no event for a while), the list is asked for ``--requests`` times through the app (the
token guard, the route, the JSON encoding; an in-process ASGI client, no socket), then as many
times again with the ``ETag`` of the answer before (``If-None-Match``). Prints:

- agents list, CPU per request: the loop thread's CPU time (``time.thread_time``) across each
  request, the client's small share included (the same on either side of a change);
- agents list, longest loop slice: per request, the longest callback of the loop while it ran
  (each step of a task between two awaits is one callback);
- agents list, body: the size of the answer;
- agents list, unchanged (304): the same two figures for a request whose ``If-None-Match``
  names the list as it is (absent when the hub gives no ``ETag``).

Nothing else runs on the loop meanwhile (the leaves wait for the model), so the figures are the
list's own; the machine's other load still shows in them: compare runs back to back.

``python -m bench.agents_list [--children N] [--grandchildren M] [--requests R] [--quick]``
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx

from bench._common import free_port, report, report_value, stop_process, wait_healthy
from bench._hub_load import CONFIG, TEMPLATE, tree_parser

TOKEN = "bench-token"
STILL_S = 1.0
"""How long the tree must go without an event before the measuring starts."""


class SliceClock:
    """The duration of every callback the running loop makes while :meth:`timing` is on."""

    def __init__(self) -> None:
        self.longest = 0.0

    @contextmanager
    def timing(self) -> Iterator[None]:
        handle_run: Callable[[asyncio.Handle], None] = asyncio.Handle._run  # pyright: ignore[reportPrivateUsage, reportUnknownMemberType, reportAttributeAccessIssue, reportUnknownVariableType]
        clock = self

        def timed(handle: asyncio.Handle) -> None:
            started = time.perf_counter()
            try:
                handle_run(handle)
            finally:
                clock.longest = max(clock.longest, time.perf_counter() - started)

        asyncio.Handle._run = timed  # pyright: ignore[reportAttributeAccessIssue]
        try:
            yield
        finally:
            asyncio.Handle._run = handle_run  # pyright: ignore[reportAttributeAccessIssue]


async def _measure(
    client: httpx.AsyncClient, clock: SliceClock, requests: int, headers: dict[str, str]
) -> tuple[list[float], list[float], httpx.Response]:
    cpu: list[float] = []
    slices: list[float] = []
    answers: list[httpx.Response] = []

    async def get() -> None:  # a task of its own: each of its steps ends before the figures are read
        answers.append(await client.get("/api/agents", headers=headers))

    for _ in range(requests):
        clock.longest = 0.0
        started = time.thread_time()
        async with anyio.create_task_group() as group:
            group.start_soon(get)
        cpu.append(time.thread_time() - started)
        slices.append(clock.longest)
        await anyio.sleep(0.005)  # let the loop settle between requests
    return cpu, slices, answers[-1]


@contextmanager
def _model(port: int, children: int, grandchildren: int) -> Iterator[None]:
    """The fan-out model on ``port``, answering; its leaves are held until the end."""
    args = ["--port", str(port), "--children", str(children), "--grandchildren", str(grandchildren)]
    model = subprocess.Popen([sys.executable, "-m", "bench.fanout_model", *args, "--latency-ms", "1"])
    try:
        wait_healthy(f"http://127.0.0.1:{port}/stats")
        yield
    finally:
        stop_process(model)


async def main(children: int, grandchildren: int, requests: int) -> None:
    from dispatch.hub.api.app import create_app
    from dispatch.hub.heap import settle_heap
    from dispatch.hub.service.hub import Hub

    expected = 1 + children + children * grandchildren
    with tempfile.TemporaryDirectory(prefix="dispatch-bench-") as tmp:
        root, data = Path(tmp, "project"), Path(tmp, "data")
        (root / ".dispatch" / "templates").mkdir(parents=True)
        model_port = free_port()
        model_url = f"http://127.0.0.1:{model_port}"
        (root / ".dispatch" / "config.yaml").write_text(CONFIG.format(base_url=model_url + "/v1"))
        template = TEMPLATE.format(max_children=max(children, grandchildren, 1))
        (root / ".dispatch" / "templates" / "fanout.yaml").write_text(template)
        os.environ["DISPATCH_MODEL_HOST"] = "off"  # the hub's own model workers, as the fan-out's
        with _model(model_port, children, grandchildren):
            async with Hub.open(root, data) as hub:
                app = create_app(hub, token=TOKEN)
                settle_heap()  # as `dispatch serve` does once it is open
                transport = httpx.ASGITransport(app=app)
                headers = {"Authorization": f"Bearer {TOKEN}"}
                async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", headers=headers) as c:
                    await hub.start("fan out", template="fanout", model="bench")
                    with anyio.fail_after(300):
                        seq, still_since = -1, time.monotonic()
                        while len(hub.tree.agents) < expected or time.monotonic() - still_since < STILL_S:
                            await anyio.sleep(0.1)
                            if hub.last_event_id != seq:
                                seq, still_since = hub.last_event_id, time.monotonic()
                    clock = SliceClock()
                    with clock.timing():
                        await _measure(c, clock, 5, {})  # warm-up
                        cpu, slices, response = await _measure(c, clock, requests, {})
                        etag = response.headers.get("etag")
                        unchanged = await _measure(c, clock, requests, {"If-None-Match": etag}) if etag else None
                    await hub.stop(deadline_s=1)
                    views: list[Any] = response.json()
                    report_value("agents list, agents", len(views), "agents")
                    report("agents list, CPU per request", cpu)
                    report("agents list, longest loop slice", slices)
                    report_value("agents list, body", len(response.content) / 1024, "KiB")
                    if unchanged is not None:
                        assert unchanged[2].status_code == 304, unchanged[2].status_code
                        report("agents list, 304: CPU per request", unchanged[0])
                        report("agents list, 304: longest loop slice", unchanged[1])


if __name__ == "__main__":
    parser = tree_parser(__doc__)
    parser.add_argument("--requests", type=int, default=200, help="requests measured (default 200)")
    args = parser.parse_args()
    n, m = (3, 3) if args.quick else (args.children, args.grandchildren)
    anyio.run(main, n, m, 20 if args.quick else args.requests)
