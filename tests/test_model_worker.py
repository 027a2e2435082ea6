"""The model worker process that makes the hub's litellm calls (``dispatch.hub.llm.model_worker``):
a call's answer comes back through it; a killed worker fails its calls as a clear, transient error
and the next call starts a new one; litellm's environment follows the hub's."""

from __future__ import annotations

import os
import signal

import anyio
import pytest

from dispatch.hub.cli.live_view import LOADING, LoadingNotice
from dispatch.hub.errors import ModelCallError
from dispatch.hub.llm.client import LiteLLMClient, start_model_worker
from dispatch.hub.llm.model_process import model_process
from tests.agent_helpers import MODEL, until
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.models_helpers import ask


@pytest.mark.anyio
async def test_a_killed_worker_fails_its_call_and_the_next_call_starts_a_new_one(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script("[first]", [Reply(text="first answer")])
    scripted_llm.script("[slow]", [Reply(text="never read", delay_s=30)])
    scripted_llm.script("[after]", [Reply(text="answered by a new worker")])
    client = LiteLLMClient()

    first = await client.complete(MODEL, ask("[first] go"), [])
    worker = model_process().pid
    assert first.text == "first answer" and worker is not None and worker != os.getpid()

    async def kill_when_asked() -> None:
        await until(lambda: len(scripted_llm.requests_for("[slow]")) == 1)
        os.kill(worker, signal.SIGKILL)

    async with anyio.create_task_group() as group:
        group.start_soon(kill_when_asked)
        with pytest.raises(ModelCallError, match=r"the model worker process stopped \(exit code -9\)"):
            with anyio.fail_after(20):
                await client.complete(MODEL, ask("[slow] wait"), [])

    after = await client.complete(MODEL, ask("[after] go"), [])
    assert after.text == "answered by a new worker"
    assert model_process().pid not in (None, worker)


@pytest.mark.anyio
async def test_the_live_view_says_the_worker_is_loading_until_it_is_ready(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script("[ready]", [Reply(text="answered once loaded")])
    running = model_process().pid
    if running is not None:  # an earlier test's worker: start from a fresh one
        os.kill(running, signal.SIGKILL)
        await until(lambda: model_process().pid is None)

    await start_model_worker()

    assert model_process().loading, "a new worker imports litellm for seconds before it is ready"
    assert LoadingNotice().__rich__().plain == LOADING
    await until(lambda: not model_process().loading, timeout_s=60)
    assert LoadingNotice().__rich__().plain == ""
    answer = await LiteLLMClient().complete(MODEL, ask("[ready] go"), [])
    assert answer.text == "answered once loaded"
