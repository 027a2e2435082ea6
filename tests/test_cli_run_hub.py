"""`dispatch run` is a hub like `dispatch serve`: a real subprocess on the scripted model server,
journaled in the data directory (logs, resume after SIGKILL, the usage ledger), its checkpoints
asked in the terminal (a pty), approved by `--yes`, refused with the reason when there is none."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dispatch.hub.service.lifecycle import HubLock
from dispatch.hub.store.db import DB_NAME, Store
from tests.agent_helpers import call
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.test_cli_run import DISPATCH, dispatch

pytestmark = pytest.mark.slow
MODEL = "openai/scripted"


def _home() -> Path:
    return Path(os.environ["DISPATCH_HOME"])


def _careful(root: Path) -> None:
    """A template whose agents stop at ``before_write``."""
    templates = root / ".dispatch" / "templates"
    templates.mkdir(parents=True)
    (templates / "careful.yaml").write_text("checkpoints: [edit]\n")


def _script_a_write(llm: ScriptedLLM, tag: str) -> None:
    llm.script(
        tag,
        [Reply(tool_calls=[call("write_file", path="notes.md", content="# Notes\n")]), Reply(text=f"{tag} reported")],
    )


def _first_tool_result(llm: ScriptedLLM, tag: str) -> str:
    return str(llm.requests_for(tag)[1].messages[-1]["content"])


@pytest.mark.anyio
async def test_a_run_appears_in_logs_and_its_usage_in_the_ledger(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script(
        "[kept]", [Reply(tool_calls=[call("list_dir", path=".")], usage=(50, 5)), Reply(text="kept", usage=(60, 6))]
    )

    done = dispatch("run", "[kept] look around", "--model", MODEL, "--root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    top = done.stderr.split("run ", 1)[1].split()[0]
    assert f"`dispatch resume {top}`" in done.stderr

    logs = dispatch("logs", top)
    assert logs.returncode == 0, logs.stderr
    assert "list_dir" in logs.stdout and "done" in logs.stdout
    async with Store.open(_home() / DB_NAME) as store:
        usage = await store.usage_total(agent_ids=[top])
    assert (usage.calls, usage.prompt_tokens, usage.completion_tokens) == (2, 110, 11)


def test_a_run_killed_mid_task_is_resumed_by_dispatch_resume(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script(
        "[killed]",
        [
            Reply(tool_calls=[call("write_file", path="half.md", content="half\n")]),
            Reply(text="lost with the run", delay_s=30),
            Reply(text="finished after the resume"),
        ],
    )
    run = subprocess.Popen(
        [*DISPATCH, "run", "[killed] write two halves", "--model", MODEL, "--root", str(tmp_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    said: list[str] = []
    assert run.stderr is not None
    threading.Thread(target=lambda: said.extend(run.stderr or []), daemon=True).start()
    deadline = time.monotonic() + 60
    while len(scripted_llm.requests_for("[killed]")) < 2:  # the second step is in flight: kill the run now
        assert time.monotonic() < deadline and run.poll() is None, "".join(said)
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    assert run.wait(timeout=30) == -signal.SIGKILL
    time.sleep(0.2)
    top = "".join(said).split("run ", 1)[1].split()[0]

    logs = dispatch("logs", top)
    assert "write_file" in logs.stdout, logs.stdout + logs.stderr
    resumed = dispatch("resume", top)

    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "finished after the resume"
    assert (tmp_path / "half.md").read_text() == "half\n"


def _in_a_terminal(args: list[str], answer: str, timeout_s: float = 90.0) -> tuple[int, str]:
    """Run ``dispatch`` with a pty as its terminal; type ``answer`` when it asks; its exit code and screen."""
    main, other = os.openpty()
    process = subprocess.Popen([*DISPATCH, *args], stdin=other, stdout=other, stderr=other, close_fds=True)
    os.close(other)
    screen, typed = b"", False
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the other end closed: the process is gone
                    break
                if not chunk:
                    break
                screen += chunk
            if not typed and b"approve?" in screen:
                os.write(main, answer.encode())
                typed = True
            if process.poll() is not None and not ready:
                break
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(main)
    return code, screen.decode(errors="replace")


def test_a_checkpoint_is_asked_in_the_terminal_and_approved_by_typing(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    _careful(tmp_path)
    _script_a_write(scripted_llm, "[asked]")

    args = ["run", "[asked] write notes", "--model", MODEL, "--root", str(tmp_path), "--template", "careful"]
    code, screen = _in_a_terminal(args, "y\n")

    assert code == 0, screen
    assert "careful is at checkpoint before_write" in screen
    assert "write_file notes.md (8 characters)" in screen and "[y] once  [s] for the session  [n] deny" in screen
    assert "[asked] reported" in screen
    assert (tmp_path / "notes.md").read_text() == "# Notes\n"


def test_a_proposed_edit_is_shown_in_the_terminal_as_a_coloured_diff(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    _careful(tmp_path)
    (tmp_path / "notes.md").write_text("# Notes\nold line\nkept\n")
    edit = call("edit_file", path="notes.md", old="old line", new="new line")
    scripted_llm.script("[diffed]", [Reply(tool_calls=[edit]), Reply(text="[diffed] reported")])

    args = ["run", "[diffed] edit notes", "--model", MODEL, "--root", str(tmp_path), "--template", "careful"]
    code, screen = _in_a_terminal(args, "y\n")

    assert code == 0, screen
    assert "careful is at checkpoint before_write" in screen and "edit_file notes.md" in screen
    assert "\x1b[31m-old line" in screen and "\x1b[32m+new line" in screen, screen  # removed red, added green
    assert " # Notes" in screen and "@@ -1,3 +1,3 @@" in screen
    assert (tmp_path / "notes.md").read_text() == "# Notes\nnew line\nkept\n"


def test_without_a_terminal_a_checkpoint_is_refused_saying_why(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    _careful(tmp_path)
    _script_a_write(scripted_llm, "[unasked]")

    done = dispatch("run", "[unasked] write notes", "--model", MODEL, "--root", str(tmp_path), "-t", "careful")

    assert done.returncode == 0, done.stderr
    assert "refused (ap-" in done.stderr and "no terminal to ask in; --yes approves" in done.stderr
    assert "no terminal to ask in" in _first_tool_result(scripted_llm, "[unasked]"), "the model reads why"
    assert not (tmp_path / "notes.md").exists()


def test_yes_approves_the_checkpoints(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    _careful(tmp_path)
    _script_a_write(scripted_llm, "[agreed]")

    done = dispatch("run", "[agreed] write notes", "--model", MODEL, "--root", str(tmp_path), "-t", "careful", "--yes")

    assert done.returncode == 0, done.stderr
    assert "approved by --yes (ap-" in done.stderr and "careful is at checkpoint before_write" in done.stderr
    assert (tmp_path / "notes.md").read_text() == "# Notes\n"


def test_a_run_on_a_data_directory_a_hub_holds_is_refused_naming_it(tmp_path: Path) -> None:
    lock = HubLock.acquire(_home(), "http://127.0.0.1:8421")
    try:
        done = dispatch("run", "anything", "--model", MODEL, "--root", str(tmp_path))
    finally:
        lock.release()

    assert done.returncode == 2
    assert "a hub is already running on the data directory" in done.stderr
    assert "http://127.0.0.1:8421" in done.stderr and "give the task to the running hub" in done.stderr
    assert "Traceback" not in done.stderr
