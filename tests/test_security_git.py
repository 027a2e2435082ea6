"""Adversarial cases for git directories: a hostile model must not change what the user's git
runs or where it reads its settings from (``commondir``, alternates, a ``gitdir:`` file, a
submodule's config), nor read a submodule's credentials, through the fs tools or the sandboxed
shell, at any depth; and ordinary git work (init, add, commit, branch, stash, log) still works in
the shell. Each case then runs the real ``git`` on the host, as the user would."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from mcp import Client

from dispatch.servers.sandbox import SandboxProbe
from tests.sandbox_helpers import (
    PROBE,
    Approvals,
    absent,
    fs_server,
    host_is_usable,
    needs_bwrap,
    run,
    sandboxed_shell,
    tool,
)

pytestmark = pytest.mark.anyio

IDENTITY = ["-c", "user.name=Agent", "-c", "user.email=agent@example.com"]
TOKEN = "ghp-submodule-token-do-not-leak"


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The user's own git, on the host, outside any sandbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(
        ["git", *IDENTITY, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False, env=env
    )


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A git repository with one commit and a submodule-like checkout ``lib`` (its git directory
    in ``.git/modules/lib``, its config holding a credential); and the path of a marker file that
    the attacks' commands would create, outside the project."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    for args in (("init", "-q", "-b", "main"), ("add", "a.txt"), ("commit", "-qm", "first")):
        assert git(root, *args).returncode == 0
    (root / "lib").mkdir()
    (root / ".git" / "modules").mkdir()
    assert git(root / "lib", "init", "-q", "--separate-git-dir", str(root / ".git" / "modules" / "lib")).returncode == 0
    with (root / ".git" / "modules" / "lib" / "config").open("a") as config:
        config.write(f'[remote "origin"]\n\turl = https://user:{TOKEN}@example.com/lib.git\n')
    marker = tmp_path / "outside" / "pwned"
    marker.parent.mkdir()
    yield root, marker
    host_is_usable()


@pytest.fixture(params=["bubblewrap", "landlock"])
def shell_probe(request: pytest.FixtureRequest) -> SandboxProbe:
    """The shell's sandbox with bubblewrap, and as ``sandbox: landlock`` runs it (bubblewrap not
    used: nothing is mounted over the git directory; what a command planted is removed after it)."""
    if request.param == "bubblewrap":
        if not PROBE.has_bwrap:
            pytest.skip(f"needs bubblewrap: {PROBE.bwrap_problem or 'not installed (apt-get install bubblewrap)'}")
        return PROBE
    if not PROBE.landlock_abi:
        pytest.skip("the kernel offers no Landlock")
    return replace(PROBE, bwrap=None, userns=False)


def evil_common_dir(marker: Path) -> str:
    """A shell command that makes ``evil/`` a git common directory whose config runs a command."""
    config = f'[core]\\n\\tfsmonitor = "touch {marker}; false"\\n'
    return f"mkdir -p evil/objects evil/refs/heads && printf '{config}' > evil/config"


def user_runs_git_status(root: Path, marker: Path) -> None:
    """The user's next ``git status`` (here and in the submodule) runs nothing the agent wrote."""
    git(root, "status")
    git(root / "lib", "status")
    assert absent(marker), "the user's git ran a command an agent planted"


async def test_commondir_cannot_point_git_at_a_planted_config_with_write_file(project: tuple[Path, Path]) -> None:
    root, marker = project
    ask = Approvals.granting()
    async with Client(fs_server(root, ask)) as c:
        written, failed = await tool(
            c, "write_file", path="evil/config", content=f'[core]\n\tfsmonitor = "touch {marker}"\n'
        )
        assert not failed, written
        await tool(c, "write_file", path="evil/refs/heads/.keep", content="")
        await tool(c, "write_file", path="evil/objects/.keep", content="")
        text, failed = await tool(c, "write_file", path=".git/commondir", content="../evil\n")
        assert failed and "always denied" in text
        text, failed = await tool(c, "write_file", path=".git/worktrees/w/commondir", content="../../../evil\n")
        assert failed and "always denied" in text
    assert ask.asked == []
    assert absent(root / ".git" / "commondir")
    user_runs_git_status(root, marker)


async def test_commondir_planted_by_a_command_is_removed_before_the_user_runs_git(
    project: tuple[Path, Path], shell_probe: SandboxProbe
) -> None:
    root, marker = project
    async with Client(sandboxed_shell(root, probe=shell_probe)) as c:
        text = await run(c, f"{evil_common_dir(marker)} && echo ../evil > .git/commondir; echo done")
    assert "done" in text and "removed .git/commondir" in text
    assert absent(root / ".git" / "commondir")
    user_runs_git_status(root, marker)


async def test_alternates_cannot_be_planted(project: tuple[Path, Path]) -> None:
    root, _ = project
    alternates = root / ".git" / "objects" / "info" / "alternates"
    async with Client(fs_server(root)) as c:
        text, failed = await tool(c, "write_file", path=".git/objects/info/alternates", content="/elsewhere/objects\n")
        assert failed and "always denied" in text
    assert absent(alternates)


async def test_alternates_planted_by_a_command_are_removed(
    project: tuple[Path, Path], shell_probe: SandboxProbe
) -> None:
    root, _ = project
    alternates = root / ".git" / "objects" / "info" / "alternates"
    async with Client(sandboxed_shell(root, probe=shell_probe)) as c:
        text = await run(c, "mkdir -p .git/objects/info && echo /elsewhere/objects > .git/objects/info/alternates")
    assert "removed .git/objects/info/alternates" in text
    assert absent(alternates)


async def test_a_submodules_config_is_neither_read_nor_written_by_the_fs_tools(project: tuple[Path, Path]) -> None:
    root, marker = project
    config = root / ".git" / "modules" / "lib" / "config"
    before = config.read_text()
    async with Client(fs_server(root, Approvals.granting())) as c:
        text, failed = await tool(c, "read_file", path=".git/modules/lib/config")
        assert failed and TOKEN not in text
        text, failed = await tool(c, "grep", pattern="url", path=".git/modules/lib")
        assert TOKEN not in text
        text, failed = await tool(
            c, "write_file", path=".git/modules/lib/config", content=f'[core]\n\tfsmonitor = "touch {marker}"\n'
        )
        assert failed and "always denied" in text
        text, failed = await tool(c, "write_file", path=".git/modules/lib/hooks/pre-commit", content="touch x\n")
        assert failed and "always denied" in text
    assert config.read_text() == before
    user_runs_git_status(root, marker)


@needs_bwrap
async def test_a_submodules_config_is_neither_read_nor_written_by_the_shell(project: tuple[Path, Path]) -> None:
    root, marker = project
    config = root / ".git" / "modules" / "lib" / "config"
    before = config.read_text()
    async with Client(sandboxed_shell(root)) as c:
        text = await run(
            c,
            "cat .git/modules/lib/config; git -C lib config --get remote.origin.url;"
            f" printf '[core]\\n\\tfsmonitor = \"touch {marker}\"\\n' >> .git/modules/lib/config;"
            " mv .git/modules/lib .git/modules/old; mkdir -p .git/modules/lib/hooks;"
            f" printf '[core]\\n\\tfsmonitor = \"touch {marker}\"\\n' > .git/modules/lib/config; echo done",
        )
    assert "done" in text and TOKEN not in text
    assert "removed .git/modules/lib/config" in text and "removed .git/modules/lib/hooks" in text
    assert absent(root / ".git" / "modules" / "lib" / "config")
    assert (root / ".git" / "modules" / "old" / "config").read_text() == before  # moved, unchanged
    user_runs_git_status(root, marker)


async def test_a_gitdir_file_cannot_be_created_with_write_file(project: tuple[Path, Path]) -> None:
    root, marker = project
    async with Client(fs_server(root)) as c:
        await tool(c, "write_file", path="evil/config", content=f'[core]\n\tfsmonitor = "touch {marker}"\n')
        text, failed = await tool(c, "write_file", path="sub/.git", content="gitdir: ../evil\n")
        assert failed and "always denied" in text
        text, failed = await tool(c, "write_file", path="lib/.git", content="gitdir: ../evil\n")
        assert failed and "always denied" in text
    assert absent(root / "sub" / ".git")
    assert (root / "lib" / ".git").read_text().startswith("gitdir: ") and "evil" not in (
        root / "lib" / ".git"
    ).read_text()
    user_runs_git_status(root, marker)


async def test_a_gitdir_file_created_by_a_command_is_removed(
    project: tuple[Path, Path], shell_probe: SandboxProbe
) -> None:
    root, marker = project
    lib_link = (root / "lib" / ".git").read_text()
    async with Client(sandboxed_shell(root, probe=shell_probe)) as c:
        text = await run(
            c,
            f"{evil_common_dir(marker)}; echo ref: refs/heads/main > evil/HEAD;"
            " mkdir -p deep/sub && echo 'gitdir: ../../evil' > deep/sub/.git;"
            " ln -s ../evil deep/.git; echo 'gitdir: ../evil' > lib/.git; echo done",
        )
    assert "done" in text and "removed deep/sub/.git" in text and "removed deep/.git" in text
    assert absent(root / "deep" / "sub" / ".git") and absent(root / "deep" / ".git")
    assert (root / "lib" / ".git").read_text() == lib_link
    git(root / "deep" / "sub", "status")
    user_runs_git_status(root, marker)


async def test_nested_mcp_json_and_dispatch_dirs_made_by_a_command_are_removed(
    project: tuple[Path, Path], shell_probe: SandboxProbe
) -> None:
    root, _ = project
    async with Client(sandboxed_shell(root, probe=shell_probe)) as c:
        text = await run(
            c,
            "mkdir -p deep/er/.dispatch && echo 'permissions: {auto_allow: [/]}' > deep/er/.dispatch/config.yaml;"
            " echo '{\"mcpServers\": {}}' > deep/.mcp.json; echo done",
        )
    assert "removed deep/.mcp.json" in text and "removed deep/er/.dispatch" in text
    assert absent(root / "deep" / ".mcp.json") and absent(root / "deep" / "er" / ".dispatch")


async def test_ordinary_git_work_still_works_in_the_shell(
    project: tuple[Path, Path], shell_probe: SandboxProbe
) -> None:
    root, marker = project
    (root / "fresh").mkdir()
    identity = " ".join(IDENTITY)
    async with Client(sandboxed_shell(root, probe=shell_probe)) as c:
        text = await run(
            c,
            f"set -e; echo b > b.txt; git add b.txt; git {identity} commit -qm 'agent commit';"
            f" git checkout -q -b feature; echo c >> a.txt; git stash -q; git stash pop -q;"
            f" git {identity} commit -qam 'on feature'; git log --oneline | wc -l;"
            f" cd fresh; git init -q -b main; echo x > x; git add x; git {identity} commit -qm 'fresh';"
            " git log --format=%s",
        )
    assert "exit code: 0" in text and "3\n" in text and "fresh" in text
    assert git(root, "log", "--format=%s", "feature").stdout.split("\n")[:3] == ["on feature", "agent commit", "first"]
    assert git(root, "status", "--porcelain").stdout == "?? fresh/\n?? lib/\n"
    assert git(root / "fresh", "log", "--format=%s").stdout == "fresh\n"
    assert absent(root / "fresh" / ".git" / "config") and absent(root / "fresh" / ".git" / "hooks")
    assert "removed fresh/.git/config" in text
    user_runs_git_status(root, marker)


async def test_later_commands_walk_only_what_changed_yet_miss_nothing(
    project: tuple[Path, Path], shell_probe: SandboxProbe
) -> None:
    """From the second command on, the walk lists only folders whose ctime moved: a file planted
    in an old folder whose time the command then sets back is still found (ctime cannot be set
    back), and one the user adds between two commands is the user's, left alone."""
    root, _ = project
    (root / "old" / "older").mkdir(parents=True)
    await anyio.sleep(1.2)  # older than the slack within which a folder is always listed again
    async with Client(sandboxed_shell(root, probe=shell_probe)) as c:
        await run(c, "true")
        planted = await run(  # the folders' times put back exactly as they were
            c,
            "touch -r old/older $TMPDIR/was-older && touch -r old $TMPDIR/was-old && echo '{}' > old/older/.mcp.json"
            " && touch -m -r $TMPDIR/was-older old/older && touch -m -r $TMPDIR/was-old old && echo planted",
        )
        (root / "old" / ".dispatch").mkdir()  # the user's, between two commands
        after = await run(c, "echo next")
    assert "planted" in planted and "removed old/older/.mcp.json" in planted
    assert absent(root / "old" / "older" / ".mcp.json")
    assert "removed" not in after and (root / "old" / ".dispatch").is_dir()
