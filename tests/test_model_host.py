"""The model host: commands' model workers forked from one process that has litellm loaded.

Each test gets a runtime directory of its own (so a host of another test or of the user is never
found) and stops the host it started; a pool of its own (``ModelProcess``), not the process-wide
one the other tests share.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatch.hub.llm import model_host
from dispatch.hub.llm.model_loop import model_loop
from dispatch.hub.llm.model_process import ModelProcess
from dispatch.hub.llm.model_worker import CallRequest
from dispatch.hub.llm.types import Completion
from tests.agent_helpers import MODEL, until
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.models_helpers import ask, pool_pids, stop_pool


def _parent(pid: int) -> int | None:
    """The parent process id of ``pid`` (from /proc); None once it has ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between it and the read
        return None
    return int(fields[1])


def _sockets(folder: Path) -> list[tuple[str, int]]:
    """The host sockets in ``folder`` with their permission bits, and the folder's own."""
    if not folder.exists():
        return []
    found = [(p.name, stat.S_IMODE(p.stat().st_mode)) for p in folder.glob("host-*.sock")]
    return [*found, (".", stat.S_IMODE(folder.stat().st_mode))]


def _environment_of(pid: int) -> str:
    return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")


def _host_pid() -> int | None:
    path = model_host.socket_path()
    assert path is not None
    return model_host._host_pid(path)  # pyright: ignore[reportPrivateUsage]


@pytest.fixture
def host_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The model host turned on, in a runtime directory of this test's (short: a socket's path
    has a length limit that pytest's folders exceed); stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="dh") as runtime:
        monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
        monkeypatch.setenv(model_host.HOST_ENV, "60")
        try:
            yield Path(runtime) / "dispatch"
        finally:
            monkeypatch.setenv(model_host.HOST_ENV, "60")  # a test may have turned it off
            model_host.stop_host()
            assert _host_pid() is None, "the host outlived its test"


async def _call(pool: ModelProcess, text: str) -> Completion:
    request = CallRequest(id=0, model=MODEL, messages=ask(text), tools=[], timeout_s=30)
    return await model_loop().run(lambda: pool.call(request))


@pytest.mark.anyio
async def test_a_commands_workers_are_forks_of_the_host_it_started_and_the_next_command_reuses_it(
    scripted_llm: ScriptedLLM, host_on: Path
) -> None:
    scripted_llm.script("[one]", [Reply(text="answered by a hosted worker")])
    scripted_llm.script("[two]", [Reply(text="answered by the next command's")])
    first = ModelProcess(1)

    answer = await _call(first, "[one] go")  # the host starts, loads litellm, then forks the worker

    assert answer.text == "answered by a hosted worker"  # the command's environment (base URL) reached it
    host = _host_pid()
    assert host is not None, "the first command started a host"
    (worker,) = await pool_pids(first)
    assert _parent(worker) == host
    (socket_file, folder) = _sockets(host_on)
    assert socket_file[1] == 0o600 and folder == (".", 0o700), "the socket and its folder are the user's alone"
    await stop_pool(first)
    await until(lambda: _parent(worker) != host, timeout_s=10)  # ended, or no longer the host's

    second = ModelProcess(1)
    answer = await _call(second, "[two] go")

    assert answer.text == "answered by the next command's"
    (next_worker,) = await pool_pids(second)
    assert _parent(next_worker) == host, "the running host forked the next command's worker"
    assert "OPENAI_API_BASE" not in _environment_of(host), "the host keeps none of a command's environment"
    await stop_pool(second)


@pytest.mark.anyio
async def test_with_the_host_off_a_command_starts_its_own_workers(
    scripted_llm: ScriptedLLM, host_on: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(model_host.HOST_ENV, "off")
    scripted_llm.script("[own]", [Reply(text="answered by its own worker")])
    pool = ModelProcess(1)

    answer = await _call(pool, "[own] go")

    assert answer.text == "answered by its own worker"
    (worker,) = await pool_pids(pool)
    assert _parent(worker) == os.getpid()
    assert len(_sockets(host_on)) <= 1, "no host was started"
    await stop_pool(pool)


def test_the_host_ends_after_its_idle_time_and_when_stopped(host_on: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = model_host.socket_path()
    assert path is not None
    path.parent.mkdir(mode=0o700, parents=True)
    idle = subprocess.Popen([sys.executable, "-m", "dispatch.hub.llm.model_host", str(path), "0.5"])
    try:
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.exists(), "the host did not get ready"
        assert idle.wait(timeout=30) == 0
        assert not path.exists(), "an idle host removes its socket as it ends"
    finally:
        idle.kill()

    kept = subprocess.Popen([sys.executable, "-m", "dispatch.hub.llm.model_host", str(path), "600"])
    try:
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert model_host.stop_host() == kept.pid
        assert kept.wait(timeout=10) == 0
        assert not path.exists()
    finally:
        kept.kill()


@pytest.mark.anyio
async def test_a_new_host_starts_while_a_worker_of_the_stopped_one_still_serves_its_command(
    scripted_llm: ScriptedLLM, host_on: Path
) -> None:
    scripted_llm.script("[long]", [Reply(text="from the first host's worker")])
    scripted_llm.script("[new]", [Reply(text="from the new host's worker")])
    running = ModelProcess(1)  # a long command (dispatch serve, say): its worker outlives the host
    assert (await _call(running, "[long] go")).text == "from the first host's worker"
    first_host = _host_pid()
    (kept,) = await pool_pids(running)
    assert first_host is not None and _parent(kept) == first_host
    assert model_host.stop_host() == first_host

    later = ModelProcess(1)
    assert (await _call(later, "[new] go")).text == "from the new host's worker"

    new_host = _host_pid()
    assert new_host is not None and new_host != first_host
    (worker,) = await pool_pids(later)
    assert _parent(worker) == new_host, "the worker the first host left holds nothing of it (its lock)"
    await stop_pool(later)
    await stop_pool(running)


def test_a_command_refused_before_its_first_call_leaves_no_host_behind(host_on: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}  # no model to be had
    env |= {"HOME": str(tmp_path), "DISPATCH_HOME": str(tmp_path / "data")}
    refused = subprocess.run(
        [sys.executable, "-m", "dispatch.hub.cli", "run", "hello", "--root", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert refused.returncode == 2 and "no model" in refused.stderr, refused.stderr
    deadline = time.monotonic() + 10
    while _host_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _host_pid() is None, "the host it started to load served nothing: it was stopped with it"
