"""The ``shell`` tool server through real MCP client sessions: in-process, and once over stdio."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import TextContent

from dispatch.servers.shell import build_server

SECRETS = {
    "FAKE_API_KEY": "value-of-fake-api-key",
    "GITHUB_TOKEN": "value-of-github-token",
    "MY_SECRET": "value-of-my-secret",
    "DB_PASSWORD": "value-of-db-password",
    "SSH_AUTH_SOCK": "/tmp/value-of-ssh-auth-sock",
    "AWS_SECRET_ACCESS_KEY": "value-of-aws-secret",
    "DATABASE_URL": "postgres://user:value-of-db-url@host/db",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("lower_case_token", "value-of-lower-case-token")
    monkeypatch.setenv("INNOCENT_VARIABLE", "still-here")


async def call(client: Client, command: str, timeout_s: float | None = None) -> tuple[str, bool]:
    """The tool's text and whether it was an error."""
    arguments: dict[str, Any] = {"command": command}
    if timeout_s is not None:
        arguments["timeout_s"] = timeout_s
    with anyio.fail_after(20):  # a regression that hangs fails here instead of stalling the suite
        result = await client.call_tool("run", arguments)
    (content,) = result.content
    assert isinstance(content, TextContent)
    return content.text, result.is_error


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs: vanished, or a zombie left for an init that does not reap."""
    deadline = time.monotonic() + 0.5
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (OSError, IndexError):
            return True  # vanished between the two looks
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def running(marker: str) -> bool:
    """Whether a process whose command line contains ``marker`` still runs (zombies do not count)."""
    deadline = time.monotonic() + 2
    while True:
        alive = False
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if (
                    marker in (proc / "cmdline").read_text()
                    and (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
                ):
                    alive = True
            except (OSError, IndexError):
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def read_pid(path: Path) -> int:
    return int(path.read_text())


def assert_scrubbed(env_output: str) -> None:
    assert env_output.startswith("exit code: 0\n--- stdout ---\n")
    names = {line.split("=", 1)[0] for line in env_output.splitlines() if "=" in line}
    assert names.isdisjoint(SECRETS), names & set(SECRETS)
    assert "lower_case_token" not in names
    for value in [*SECRETS.values(), "value-of-lower-case-token"]:
        assert value not in env_output
    assert "PATH" in names
    assert "INNOCENT_VARIABLE=still-here" in env_output


@pytest.mark.anyio
@pytest.mark.usefixtures("secrets")
async def test_environment_has_no_credentials(tmp_path: Path) -> None:
    async with Client(build_server(tmp_path)) as client:
        text, is_error = await call(client, "env")
    assert not is_error
    assert_scrubbed(text)


@pytest.mark.anyio
async def test_exit_code_and_sections(tmp_path: Path) -> None:
    async with Client(build_server(tmp_path)) as client:
        assert await call(client, "echo out; echo err >&2; exit 3") == (
            "exit code: 3\n--- stdout ---\nout\n--- stderr ---\nerr",
            False,
        )
        assert await call(client, "true") == ("exit code: 0", False)
        assert await call(client, "echo only-err >&2") == ("exit code: 0\n--- stderr ---\nonly-err", False)
        assert await call(client, "kill -9 $$") == ("exit code: -9 (killed by SIGKILL)", False)


@pytest.mark.anyio
async def test_cwd_is_the_root_and_stdin_is_empty(tmp_path: Path) -> None:
    async with Client(build_server(tmp_path)) as client:
        text, _ = await call(client, "pwd; cat; echo made > made.txt", timeout_s=5)
    assert text == f"exit code: 0\n--- stdout ---\n{tmp_path}"
    assert (tmp_path / "made.txt").read_text() == "made\n"


@pytest.mark.anyio
async def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    async with Client(build_server(tmp_path)) as client:
        started = time.monotonic()
        text, is_error = await call(client, "sleep 100", timeout_s=1)
        assert time.monotonic() - started < 3
        assert (text, is_error) == ("timed out after 1s; process group killed", False)

        started = time.monotonic()
        text, _ = await call(client, "echo before; sleep 100 & echo $! > pid; wait", timeout_s=1)
        assert time.monotonic() - started < 3
    assert text == "timed out after 1s; process group killed\n--- stdout ---\nbefore"
    assert gone(read_pid(tmp_path / "pid"))


@pytest.mark.anyio
async def test_sigkill_follows_when_sigterm_is_ignored(tmp_path: Path) -> None:
    async with Client(build_server(tmp_path)) as client:
        started = time.monotonic()
        text, _ = await call(client, "trap '' TERM; sleep 100 & echo $! > pid; wait", timeout_s=0.5)
        assert time.monotonic() - started < 3.5
    assert text.startswith("timed out after 0.5s; process group killed")
    assert gone(read_pid(tmp_path / "pid"))


@pytest.mark.anyio
async def test_background_child_is_killed_after_the_command_exits(tmp_path: Path) -> None:
    async with Client(build_server(tmp_path)) as client:
        started = time.monotonic()
        text, _ = await call(client, "sleep 100 & echo $! > pid; echo done")
        assert time.monotonic() - started < 2
    assert text == "exit code: 0\n--- stdout ---\ndone"
    assert gone(read_pid(tmp_path / "pid"))


@pytest.mark.anyio
async def test_an_escaped_process_holding_the_pipes_does_not_block(tmp_path: Path) -> None:
    try:
        async with Client(build_server(tmp_path)) as client:
            started = time.monotonic()
            text, _ = await call(client, "setsid sleep 100 & echo $! > pid; echo done")
            assert time.monotonic() - started < 3
        assert text == "exit code: 0\n--- stdout ---\ndone"
    finally:
        if (tmp_path / "pid").exists():
            os.kill(read_pid(tmp_path / "pid"), signal.SIGKILL)


@pytest.mark.anyio
async def test_large_output_is_capped_with_head_tail_and_the_cut(tmp_path: Path) -> None:
    command = "head -c 10000000 /dev/zero | tr '\\0' a; echo END; head -c 200000 /dev/zero | tr '\\0' e >&2"
    async with Client(build_server(tmp_path)) as client:
        text, is_error = await call(client, command)
    assert not is_error
    out, err = text.split("\n--- stderr ---\n")
    head, cut, tail = out.removeprefix("exit code: 0\n--- stdout ---\n").split("\n")
    assert cut == "[... 9,934,468 bytes of stdout cut; 10,000,004 bytes in all ...]"
    assert head == "a" * 32768
    assert tail == "a" * 32764 + "END"  # the last newline is stripped from the section
    err_head, err_cut, err_tail = err.split("\n")
    assert err_cut == "[... 134,464 bytes of stderr cut; 200,000 bytes in all ...]"
    assert err_head == err_tail == "e" * 32768


@pytest.mark.anyio
async def test_timeouts_out_of_range_are_tool_errors(tmp_path: Path) -> None:
    async with Client(build_server(tmp_path, default_timeout_s=0.5, max_timeout_s=10)) as client:
        for bad in (0, -1, 10.5):
            text, is_error = await call(client, "echo never", timeout_s=bad)
            assert is_error
            assert "timeout_s must be above 0 and at most 10" in text
        assert await call(client, "sleep 100") == ("timed out after 0.5s; process group killed", False)
        assert await call(client, "echo ok", timeout_s=10) == ("exit code: 0\n--- stdout ---\nok", False)


class RecordingLauncher:
    """A stand-in for the sandbox: wraps the command and adds to the environment."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Path]] = []

    def argv(self, command: str, root: Path) -> list[str]:
        self.seen.append((command, root))
        return ["bash", "-c", f"echo wrapped; {command}"]

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        return {"PATH": base["PATH"], "IN_SANDBOX": "1"}


@pytest.mark.anyio
async def test_the_launcher_decides_argv_and_environment(tmp_path: Path) -> None:
    launcher = RecordingLauncher()
    async with Client(build_server(tmp_path, launcher=launcher)) as client:
        text, _ = await call(client, "echo $IN_SANDBOX; echo ${HOME:-no-home}")
    assert text == "exit code: 0\n--- stdout ---\nwrapped\n1\nno-home"
    assert launcher.seen == [("echo $IN_SANDBOX; echo ${HOME:-no-home}", tmp_path)]


@pytest.mark.anyio
@pytest.mark.usefixtures("secrets")
async def test_over_stdio(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "dispatch.servers.shell", "--root", str(tmp_path)],
        env=dict(os.environ),
    )
    async with Client(params) as client:
        text, is_error = await call(client, "env; cat", timeout_s=10)
        assert not is_error
        assert_scrubbed(text)

        assert await call(client, "pwd; exit 3") == (
            f"exit code: 3\n--- stdout ---\n{tmp_path}",
            False,
        )

        started = time.monotonic()  # sandboxed (the default over stdio): pids are the sandbox's own
        text, _ = await call(client, "sleep 100.4242 & wait", timeout_s=1)
        assert time.monotonic() - started < 3
        assert text == "timed out after 1s; process group killed"
    assert not running("sleep\x00100.4242")
