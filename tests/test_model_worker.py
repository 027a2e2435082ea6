"""The model worker processes that make the hub's litellm calls (``dispatch.hub.llm.model_worker``):
a call's answer comes back through one; calls spread over the pool; a killed worker fails its calls
as a clear, transient error, a new one takes its place, and agents whose calls it had still finish
(the router retries them on another worker); litellm's environment follows the hub's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from dispatch.hub.cli.live_view import LOADING, LoadingNotice
from dispatch.hub.errors import ModelCallError
from dispatch.hub.llm.client import LiteLLMClient, start_model_worker
from dispatch.hub.llm.model_process import model_process
from tests.agent_helpers import MODEL, assert_done, until
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.models_helpers import Rig, ask, config, key, model, spec


async def _two_ready_workers() -> list[int]:
    await start_model_worker(2)
    await until(lambda: model_process().ready == 2, timeout_s=60)
    return model_process().pids


def _busy_workers() -> dict[int, int]:
    return {pid: calls for pid, calls in model_process().in_flight().items() if calls}


@pytest.mark.anyio
async def test_a_killed_worker_fails_its_call_and_the_next_call_starts_a_new_one(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script("[first]", [Reply(text="first answer")])
    scripted_llm.script("[slow]", [Reply(text="never read", delay_s=30)])
    scripted_llm.script("[after]", [Reply(text="answered by a new worker")])
    client = LiteLLMClient()

    first = await client.complete(MODEL, ask("[first] go"), [])
    assert first.text == "first answer"
    killed: list[int] = []

    async def kill_when_asked() -> None:
        await until(lambda: len(scripted_llm.requests_for("[slow]")) == 1)
        (worker,) = _busy_workers()
        assert worker != os.getpid()
        os.kill(worker, signal.SIGKILL)
        killed.append(worker)

    async with anyio.create_task_group() as group:
        group.start_soon(kill_when_asked)
        with pytest.raises(ModelCallError, match=r"the model worker process stopped \(exit code -9\)"):
            with anyio.fail_after(20):
                await client.complete(MODEL, ask("[slow] wait"), [])

    after = await client.complete(MODEL, ask("[after] go"), [])
    assert after.text == "answered by a new worker"
    await until(lambda: len(model_process().pids) == model_process().workers)  # the killed one replaced
    assert killed[0] not in model_process().pids


@pytest.mark.anyio
async def test_calls_in_flight_spread_over_the_workers(scripted_llm: ScriptedLLM) -> None:
    first, second = await _two_ready_workers()
    for n in range(4):
        scripted_llm.script(f"[spread {n}]", [Reply(text=f"answer {n}", delay_s=1.0)])
    client = LiteLLMClient()
    answers: dict[int, str | None] = {}

    async def ask_one(n: int) -> None:
        answers[n] = (await client.complete(MODEL, ask(f"[spread {n}] go"), [])).text

    async with anyio.create_task_group() as group:
        for n in range(4):
            group.start_soon(ask_one, n)
        await until(lambda: len(scripted_llm.requests) == 4)
        assert _busy_workers() == {first: 2, second: 2}
    assert answers == {n: f"answer {n}" for n in range(4)}


@pytest.mark.anyio
async def test_agents_finish_when_a_worker_dies_under_their_calls(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    await _two_ready_workers()
    agents = 6
    # each agent's first call is held a while (the kill lands meanwhile); the three calls that were
    # on the killed worker are asked again, elsewhere, and answered at once
    held = [Reply(text="done", delay_s=1.5) for _ in range(agents)]
    scripted_llm.script("[fleet]", [*held, *(Reply(text="done on a retry") for _ in range(agents // 2))])
    rig = Rig(config(key("bench", "openai", scripted_llm, {"fleet-model": model("fleet")})), tmp_path)
    try:
        async with rig.tree(tmp_path) as tree:
            running = [tree.start(spec(f"[fleet] agent {n}", "fleet")) for n in range(agents)]
            await until(lambda: len(scripted_llm.requests) == agents)
            victim = max(_busy_workers().items(), key=lambda item: item[1])
            assert victim[1] == agents // 2, "the calls spread evenly over the two workers"
            os.kill(victim[0], signal.SIGKILL)
            with anyio.fail_after(30):
                for agent in running:
                    await agent.finished.wait()
        for agent in running:
            assert_done(agent)
        assert victim[0] not in model_process().pids
    finally:
        rig.close()


@pytest.mark.anyio
async def test_the_live_view_says_the_worker_is_loading_until_it_is_ready(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script("[ready]", [Reply(text="answered once loaded")])
    for running in model_process().pids:  # an earlier test's workers: start from fresh ones
        os.kill(running, signal.SIGKILL)
    await until(lambda: model_process().ready == 0)

    await start_model_worker()

    assert model_process().loading, "a new worker imports litellm for seconds before it is ready"
    assert LoadingNotice().__rich__().plain == LOADING
    await until(lambda: not model_process().loading, timeout_s=60)
    assert LoadingNotice().__rich__().plain == ""
    answer = await LiteLLMClient().complete(MODEL, ask("[ready] go"), [])
    assert answer.text == "answered once loaded"


_CALLS_ON_THE_COMMANDS_LOOP = """
import json, os, sys, threading
import anyio
from dispatch.hub.llm.client import LiteLLMClient, model_calls_on_this_loop
from dispatch.hub.llm.model_process import model_process

async def main():
    async with model_calls_on_this_loop():
        answer = await LiteLLMClient().complete(sys.argv[1], [{"role": "user", "content": "[here] go"}], [])
        pids, threads = model_process().pids, [t.name for t in threading.enumerate()]
    gone = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            gone.append(pid)
    print(json.dumps({"text": answer.text, "threads": threads, "workers": pids, "gone": gone}))

anyio.run(main)
"""


def test_a_command_makes_its_model_calls_on_its_own_loop_and_ends_its_workers_cleanly(
    scripted_llm: ScriptedLLM,
) -> None:
    """What ``dispatch serve`` does: calls made on the command's own event loop (no thread of loop
    for them) through workers of its own, which are gone when the context ends, with nothing left
    for the loop's close to complain about."""
    scripted_llm.script("[here]", [Reply(text="answered on the command's loop")])
    ran = subprocess.run(
        [sys.executable, "-c", _CALLS_ON_THE_COMMANDS_LOOP, MODEL],
        capture_output=True, text=True, timeout=120, env=os.environ | {"DISPATCH_MODEL_HOST": "off"},
    )  # fmt: skip
    assert ran.returncode == 0 and ran.stderr == "", ran.stderr
    seen = json.loads(ran.stdout)
    assert seen["text"] == "answered on the command's loop"
    assert "dispatch-model-calls" not in seen["threads"], seen["threads"]
    assert seen["workers"] and seen["gone"] == seen["workers"]
