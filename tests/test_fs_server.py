"""The ``fs`` tool server, through real MCP client sessions (in-process, and one over stdio)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import TextContent

from dispatch.servers import shell
from dispatch.servers._base import MCPServer
from dispatch.servers.fs import server as fs
from dispatch.servers.fs.server import MAX_GREP, MAX_READ_BYTES, build_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A small project: text files, a sub directory, a .git directory, a binary file."""
    proj = tmp_path / "proj"
    (proj / "src" / "pkg").mkdir(parents=True)
    (proj / "sub").mkdir()
    (proj / ".git").mkdir()
    (proj / "README.md").write_text("# Project\nhello world\n")
    (proj / "src" / "main.py").write_text("import os\n\ndef main():\n    return 'hello'\n")
    (proj / "src" / "pkg" / "util.py").write_text("def helper():\n    return 42\n")
    (proj / ".git" / "config.py").write_text("hello = 'from git'\n")
    (proj / "image.bin").write_bytes(b"hello\x00\x01\x02binary")
    return proj


async def call(client: Client, tool: str, **arguments: Any) -> tuple[bool, str]:
    """Call a tool and return (is_error, its text), as a model would see it."""
    result = await client.call_tool(tool, arguments)
    texts = [c.text for c in result.content if isinstance(c, TextContent)]
    return result.is_error, "\n".join(texts)


async def ok(client: Client, tool: str, **arguments: Any) -> str:
    is_error, text = await call(client, tool, **arguments)
    assert not is_error, text
    return text


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    is_error, text = await call(client, tool, **arguments)
    assert is_error, f"{tool}({arguments}) was not refused: {text}"
    return text


# --- path rules ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("given", "resolved"),
    [("../x", "{parent}/x"), ("/etc/passwd", "/etc/passwd"), ("link/passwd", "/etc/passwd")],
)
async def test_paths_leading_out_of_the_root_are_refused(root: Path, given: str, resolved: str) -> None:
    (root / "link").symlink_to("/etc")
    (root.parent / "x").write_text("outside\n")
    expected = resolved.format(parent=root.parent)
    async with Client(build_server(root)) as c:
        for tool, args in [
            ("read_file", {"path": given}),
            ("write_file", {"path": given, "content": "pwned"}),
            ("edit_file", {"path": given, "old": "outside", "new": "pwned"}),
            ("grep", {"pattern": "root|outside", "path": given}),
        ]:
            text = await refused(c, tool, **args)
            assert f"'{given}'" in text
            assert f"'{expected}'" in text
            assert f"outside the project root '{root}'" in text
        assert "'link' resolves to '/etc', outside" in await refused(c, "list_dir", path="link")
        assert "outside the project root" in await refused(c, "list_dir", path="..")
    assert (root.parent / "x").read_text() == "outside\n"


@pytest.mark.anyio
async def test_symlinks_inside_the_root_are_followed(root: Path) -> None:
    (root / "docs").symlink_to(root / "src")
    async with Client(build_server(root)) as c:
        assert "return 42" in await ok(c, "read_file", path="docs/pkg/util.py")


@pytest.mark.anyio
async def test_relative_paths_resolve_against_the_root_not_the_cwd(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "README.md").write_text("the wrong file\n")
    monkeypatch.chdir(elsewhere)
    async with Client(build_server(root)) as c:
        assert await ok(c, "read_file", path="README.md") == "# Project\nhello world\n"
        await ok(c, "write_file", path="new.txt", content="made\n")
        assert "README.md" in await ok(c, "list_dir")
    assert (root / "new.txt").read_text() == "made\n"
    assert not (elsewhere / "new.txt").exists()


@pytest.mark.anyio
async def test_writes_outside_the_write_paths_are_refused(root: Path) -> None:
    async with Client(build_server(root, write=[Path("sub")])) as c:
        assert "created 'sub/deep/a.txt'" in await ok(c, "write_file", path="sub/deep/a.txt", content="x")
        text = await refused(c, "write_file", path="README.md", content="gone")
        assert "'README.md'" in text
        assert "outside the writable paths: sub" in text
        text = await refused(c, "edit_file", path="README.md", old="hello", new="bye")
        assert "outside the writable paths: sub" in text
        assert "hello world" in await ok(c, "read_file", path="README.md")  # reading is still fine
    assert (root / "sub" / "deep" / "a.txt").read_text() == "x"
    assert (root / "README.md").read_text() == "# Project\nhello world\n"


@pytest.mark.anyio
async def test_an_empty_write_list_is_read_only(root: Path) -> None:
    async with Client(build_server(root, write=[])) as c:
        text = await refused(c, "write_file", path="sub/a.txt", content="x")
        assert "'sub/a.txt'" in text
        assert "read-only" in text
    assert not (root / "sub" / "a.txt").exists()


def test_write_paths_must_lie_inside_the_root(root: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        build_server(root, write=[Path("../elsewhere")])
    build_server(root, write=[root / "sub"])  # absolute inside the root is fine


# --- read_file ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_read_file_pages_with_offset_and_limit(root: Path) -> None:
    (root / "ten.txt").write_text("".join(f"line {n}\n" for n in range(1, 11)))
    async with Client(build_server(root)) as c:
        assert await ok(c, "read_file", path="ten.txt") == (root / "ten.txt").read_text()
        text = await ok(c, "read_file", path="ten.txt", offset=3, limit=4)
        assert text == "line 3\nline 4\nline 5\nline 6\n[lines 3-6 of 10; pass offset=7 to read on]"
        text = await ok(c, "read_file", path="ten.txt", offset=7)
        assert text == "line 7\nline 8\nline 9\nline 10\n[lines 7-10 of 10; end of file]"
        assert "past the end" in await refused(c, "read_file", path="ten.txt", offset=11)
        await refused(c, "read_file", path="ten.txt", offset=0)
        await refused(c, "read_file", path="ten.txt", limit=0)


@pytest.mark.anyio
async def test_read_file_caps_the_bytes_it_returns(root: Path) -> None:
    line = "x" * 99 + "\n"
    (root / "big.txt").write_text(line * 5000)  # 500 KB, about twice the cap
    async with Client(build_server(root)) as c:
        text = await ok(c, "read_file", path="big.txt", limit=5000)
    body, footer = text.rsplit("\n", 1)
    shown = MAX_READ_BYTES // 100
    assert len(body.encode()) <= MAX_READ_BYTES
    assert footer == f"[lines 1-{shown} of 5000, stopped at the 256 KiB cap; pass offset={shown + 1} to read on]"


@pytest.mark.anyio
async def test_read_file_refuses_binary_files_and_explains_os_errors(root: Path) -> None:
    async with Client(build_server(root)) as c:
        assert "binary" in await refused(c, "read_file", path="image.bin")
        assert "'missing.txt': not found" in await refused(c, "read_file", path="missing.txt")
        assert "'src': is a directory" in await refused(c, "read_file", path="src")
        text = await refused(c, "write_file", path="README.md/x", content="x")
        assert "'README.md/x'" in text
        assert "not a directory" in text


@pytest.mark.anyio
async def test_binary_without_a_nul_byte_is_binary_as_in_the_shell_and_latin_1_text_is_text(root: Path) -> None:
    packed = bytes(range(0x80, 0x100)) * 8 + b"\nhello packed\n"  # no NUL, not text: binary for the shell too
    (root / "packed.dat").write_bytes(packed)
    (root / "notes.txt").write_bytes("caf\u00e9 hello, na\u00efve\n".encode("latin-1"))  # text, not UTF-8
    async with Client(build_server(root)) as c:
        text = await refused(c, "read_file", path="packed.dat")
        assert text.endswith(
            "'packed.dat' is a binary file (a NUL byte, or mostly bytes that are not text); read_file reads text only"
        )
        assert await ok(c, "read_file", path="notes.txt") == "caf\ufffd hello, na\ufffdve\n"
        assert await ok(c, "grep", pattern="hello( packed|,)") == "notes.txt:1: caf\ufffd hello, na\ufffdve"
    async with Client(shell.build_server(root)) as c:
        assert "[binary output: 1,038 bytes, not shown" in await ok(c, "run", command="cat packed.dat")
        assert "caf\ufffd hello" in await ok(c, "run", command="cat notes.txt")


# --- write_file and edit_file -------------------------------------------------------------


@pytest.mark.anyio
async def test_write_file_creates_parents_and_replaces_in_place(root: Path) -> None:
    script = root / "run.sh"
    script.write_text("old\n")
    script.chmod(0o755)
    async with Client(build_server(root)) as c:
        assert await ok(c, "write_file", path="a/b/c.txt", content="héllo\n") == "created 'a/b/c.txt' (7 bytes)"
        assert await ok(c, "write_file", path="run.sh", content="new\n") == "replaced 'run.sh' (4 bytes)"
        assert "is a directory" in await refused(c, "write_file", path="src", content="x")
    assert (root / "a" / "b" / "c.txt").read_text(encoding="utf-8") == "héllo\n"
    assert script.read_text() == "new\n"
    assert script.stat().st_mode & 0o777 == 0o755
    assert sorted(os.listdir(root / "a" / "b")) == ["c.txt"]  # no temporary file left behind


@pytest.mark.anyio
async def test_edit_file_replaces_one_exact_occurrence(root: Path) -> None:
    async with Client(build_server(root)) as c:
        text = await ok(c, "edit_file", path="src/main.py", old="return 'hello'", new="return 'bye'")
        assert "line 4" in text
        assert (root / "src" / "main.py").read_text() == "import os\n\ndef main():\n    return 'bye'\n"

        text = await refused(c, "edit_file", path="src/main.py", old="return 'nope'", new="x")
        assert "not found in 'src/main.py'" in text

        (root / "dup.txt").write_text("a = 1\nb = 1\na = 1\n")
        text = await refused(c, "edit_file", path="dup.txt", old="a = 1", new="a = 2")
        assert "occurs 2 times in 'dup.txt'" in text
        assert "more surrounding lines" in text
        assert (root / "dup.txt").read_text() == "a = 1\nb = 1\na = 1\n"

        await ok(c, "edit_file", path="dup.txt", old="a = 1\nb", new="a = 2\nb")
        assert (root / "dup.txt").read_text() == "a = 2\nb = 1\na = 1\n"
        assert "binary" in await refused(c, "edit_file", path="image.bin", old="hello", new="x")


# --- list_dir, glob, grep -----------------------------------------------------------------


@pytest.mark.anyio
async def test_list_dir_marks_directories_and_sizes(root: Path) -> None:
    async with Client(build_server(root)) as c:
        text = await ok(c, "list_dir")
        assert text.splitlines() == [
            ".git/",
            "image.bin  (14 bytes)",
            "README.md  (22 bytes)",
            "src/",
            "sub/",
        ]
        assert await ok(c, "list_dir", path="src") == "main.py  (42 bytes)\npkg/"
        assert await ok(c, "list_dir", path="sub") == "'sub' is empty"
        assert "not a directory" in await refused(c, "list_dir", path="README.md")


@pytest.mark.anyio
async def test_glob_matches_sorted_relative_paths_without_git(root: Path) -> None:
    (root / "link").symlink_to("/etc")
    async with Client(build_server(root)) as c:
        assert await ok(c, "glob", pattern="**/*.py") == "src/main.py\nsrc/pkg/util.py"
        assert await ok(c, "glob", pattern="src/*") == "src/main.py\nsrc/pkg/"
        assert await ok(c, "glob", pattern="*.rs") == "no paths match '*.rs'"
        text = await ok(c, "glob", pattern="link/*")
        assert "/etc" not in text
        assert "passwd" not in text
        assert "left out" in text
        assert "'../*'" in await refused(c, "glob", pattern="../*")
        assert "relative" in await refused(c, "glob", pattern="/etc/*")


@pytest.mark.anyio
async def test_glob_is_capped(root: Path) -> None:
    many = root / "many"
    many.mkdir()
    for n in range(1005):
        (many / f"f{n:04}.txt").touch()
    async with Client(build_server(root)) as c:
        lines = (await ok(c, "glob", pattern="many/*.txt")).splitlines()
    assert len(lines) == 1001
    assert lines[0] == "many/f0000.txt"
    assert lines[-1] == "[5 more matches not shown; narrow the pattern]"


@pytest.mark.anyio
async def test_grep_prints_path_line_and_text(root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("hello from outside\n")
    (root / "leak.txt").symlink_to(secret)
    async with Client(build_server(root)) as c:
        assert await ok(c, "grep", pattern="hel+o") == "\n".join(
            ["README.md:2: hello world", "src/main.py:4:     return 'hello'"]
        )  # not .git/config.py, not image.bin, not the symlink leading out
        assert await ok(c, "grep", pattern=r"def \w+", path="src/pkg") == "src/pkg/util.py:1: def helper():"
        assert await ok(c, "grep", pattern="import", path="src/main.py") == "src/main.py:1: import os"
        assert await ok(c, "grep", pattern="nothing here") == "no matches for 'nothing here' in '.'"
        text = await refused(c, "grep", pattern="(unclosed")
        assert "bad regex '(unclosed'" in text
        assert "missing )" in text
        assert "not found" in await refused(c, "grep", pattern="x", path="nope")


@pytest.mark.anyio
async def test_grep_is_capped(root: Path) -> None:
    (root / "many.txt").write_text("match\n" * (MAX_GREP + 100))
    async with Client(build_server(root)) as c:
        lines = (await ok(c, "grep", pattern="match", path="many.txt")).splitlines()
    assert len(lines) == MAX_GREP + 1
    assert lines[-2] == f"many.txt:{MAX_GREP}: match"
    assert "stopped at 500 matches" in lines[-1]


@pytest.fixture
def ignoring(root: Path) -> Path:
    """The project with git ignore files: an ignored node_modules/ and .venv/, a nested .gitignore
    that ignores *.log but re-includes keep.log, and .git/info/exclude ignoring scratch/."""
    (root / ".gitignore").write_text("node_modules/\n.venv/\n")
    (root / ".git" / "info").mkdir()
    (root / ".git" / "info" / "exclude").write_text("scratch/\n")
    for folder in ("node_modules/pkg", ".venv/lib", "scratch", "src/logs"):
        (root / folder).mkdir(parents=True)
    (root / "node_modules" / "pkg" / "index.js").write_text("const needle = 1;\n")
    (root / ".venv" / "lib" / "site.py").write_text("needle = 2\n")
    (root / "scratch" / "notes.txt").write_text("needle 3\n")
    (root / "src" / "logs" / ".gitignore").write_text("*.log\n!keep.log\n")
    (root / "src" / "logs" / "run.log").write_text("needle 4\n")
    (root / "src" / "logs" / "keep.log").write_text("needle 5\n")
    (root / "src" / "tracked.py").write_text("needle = 6\n")
    return root


@pytest.mark.anyio
async def test_grep_skips_what_gitignore_ignores_unless_asked_for(ignoring: Path) -> None:
    async with Client(build_server(ignoring)) as c:
        assert await ok(c, "grep", pattern="needle") == "src/tracked.py:1: needle = 6\nsrc/logs/keep.log:1: needle 5"
        assert await ok(c, "grep", pattern="needle", path="src/logs") == "src/logs/keep.log:1: needle 5"
        # a path that is itself ignored, or inside an ignored folder, is searched
        assert (
            await ok(c, "grep", pattern="needle", path="node_modules")
            == "node_modules/pkg/index.js:1: const needle = 1;"
        )
        assert await ok(c, "grep", pattern="needle", path=".venv/lib") == ".venv/lib/site.py:1: needle = 2"
        assert await ok(c, "grep", pattern="needle", path="src/logs/run.log") == "src/logs/run.log:1: needle 4"
        assert await ok(c, "grep", pattern="needle", path="scratch") == "scratch/notes.txt:1: needle 3"


@pytest.mark.anyio
async def test_glob_skips_what_gitignore_ignores_unless_the_pattern_starts_there(ignoring: Path) -> None:
    async with Client(build_server(ignoring)) as c:
        found = await ok(c, "glob", pattern="**/*.*")
        assert found.splitlines()[:-1] == [
            ".gitignore",
            "README.md",
            "image.bin",
            "src/logs/.gitignore",
            "src/logs/keep.log",
            "src/main.py",
            "src/pkg/util.py",
            "src/tracked.py",
        ]
        assert "matches left out: .gitignore ignores them" in found.splitlines()[-1]
        assert await ok(c, "glob", pattern="node_modules/**/*.js") == "node_modules/pkg/index.js"
        assert await ok(c, "glob", pattern="node_modules") == "node_modules/"
        assert (await ok(c, "glob", pattern="src/logs/*.log")).startswith("src/logs/keep.log\n[1 matches left out")


@pytest.mark.anyio
async def test_tool_schemas(root: Path) -> None:
    async with Client(build_server(root)) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    assert sorted(tools) == ["edit_file", "glob", "grep", "list_dir", "read_file", "write_file"]
    assert list(tools["read_file"].input_schema["properties"]) == ["path", "offset", "limit"]
    assert list(tools["edit_file"].input_schema["properties"]) == ["path", "old", "new"]
    assert tools["read_file"].annotations is not None
    assert tools["read_file"].annotations.read_only_hint is True
    assert tools["write_file"].annotations is not None
    assert tools["write_file"].annotations.read_only_hint is False


# --- the command line --------------------------------------------------------------------


def test_main_refuses_write_paths_outside_the_root(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        fs.main(["--root", str(root), "--write", "../elsewhere"])
    assert exit_info.value.code == 2
    assert "write path '../elsewhere' resolves to" in capsys.readouterr().err


@pytest.mark.anyio
async def test_main_read_only_builds_a_read_only_server(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[MCPServer] = []
    monkeypatch.setattr(fs, "serve_stdio", served.append)
    fs.main(["--root", str(root), "--read-only"])
    async with Client(served[0]) as c:
        assert "read-only" in await refused(c, "write_file", path="sub/a.txt", content="x")
        assert "hello world" in await ok(c, "read_file", path="README.md")


# --- over stdio ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_stdio_server_keeps_the_same_rules(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "dispatch.servers.fs", "--root", str(root), "--write", "sub"],
        cwd=elsewhere,
    )
    async with Client(params) as c:
        assert await ok(c, "write_file", path="sub/a.txt", content="inside\n") == "created 'sub/a.txt' (7 bytes)"
        assert "outside the writable paths: sub" in await refused(c, "write_file", path="a.txt", content="x")
        text = await refused(c, "read_file", path="../x")
        assert f"'../x' resolves to '{root.parent}/x', outside the project root '{root}'" in text
        assert await ok(c, "read_file", path="README.md") == "# Project\nhello world\n"
    assert (root / "sub" / "a.txt").read_text() == "inside\n"
    assert not (root / "a.txt").exists()
    assert not (elsewhere / "sub").exists()
