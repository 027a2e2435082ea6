"""The ``lsp`` tool server through real MCP client sessions: in-process on a shared manager, and
over stdio as ``python -m dispatch.servers.lsp`` with a manager of its own."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import TextContent

from dispatch.servers.lsp.manager import LspManager
from dispatch.servers.lsp.server import build_server

pytestmark = pytest.mark.anyio

BROKEN = "def total(xs: list[int]) -> int:\n    return sum(xs)\n\ncount: str = total([1, 2])\n"
GUARD_S = 90


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text("[project]\nname = 'proj'\n")
    (root / "app.py").write_text(BROKEN)
    (tmp_path / "outside.py").write_text("x: int = 'no'\n")
    return root.resolve()


@pytest.fixture
async def manager() -> AsyncIterator[LspManager]:
    async with LspManager() as lsp:
        yield lsp


async def call(client: Client, tool: str, **arguments: Any) -> tuple[bool, str]:
    result = await client.call_tool(tool, arguments)
    return result.is_error, "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def test_diagnostics_and_languages_tools(project: Path, manager: LspManager) -> None:
    with anyio.fail_after(GUARD_S):
        async with Client(build_server(project, manager)) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            is_error, text = await call(client, "diagnostics", path="app.py")
            _, languages = await call(client, "languages")

    assert set(tools) == {"diagnostics", "languages"}
    assert tools["diagnostics"].annotations is not None and tools["diagnostics"].annotations.read_only_hint
    assert not is_error, text
    [found] = json.loads(text)["diagnostics"]
    assert (found["file"], found["line"], found["column"], found["severity"]) == ("app.py", 4, 14, "error")
    [python] = json.loads(languages)["languages"]
    assert python["language"] == "python" and python["server"] == "pyright-langserver"
    assert python["status"] == f"running (pid {manager.pid(project, 'python')})"


async def test_paths_outside_the_root_and_unknown_files_are_refused(project: Path, manager: LspManager) -> None:
    (project / "README.md").write_text("# hi\n")
    (project / "link.py").symlink_to(project.parent / "outside.py")
    async with Client(build_server(project, manager)) as client:
        for path in ("../outside.py", str(project.parent / "outside.py"), "link.py"):
            is_error, text = await call(client, "diagnostics", path=path)
            assert is_error and "outside the project root" in text, (path, text)
        is_error, text = await call(client, "diagnostics", path="README.md")
        assert is_error and text.endswith(": no language server handles .md files")
        is_error, text = await call(client, "diagnostics", path="nope/")
        assert is_error and text.endswith(": 'nope': not found")
    assert manager.pid(project, "python") is None


async def test_a_missing_server_is_a_clear_tool_error(project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    with anyio.fail_after(GUARD_S):
        async with LspManager(search_path=str(empty)) as lsp, Client(build_server(project, lsp)) as client:
            is_error, text = await call(client, "diagnostics", path="app.py")
            is_error_all, text_all = await call(client, "diagnostics")

    prefix = "Error executing tool diagnostics: "
    assert is_error and text.startswith(f"{prefix}no python language server found (looked for pyright-langserver")
    assert "install: pip install pyright (needs Node.js), or pip install python-lsp-server" in text
    assert is_error_all and text_all == text.replace(prefix, f"{prefix}python: ")


async def test_the_server_over_stdio_owns_its_manager(project: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "dispatch.servers.lsp", "--root", str(project)], cwd=str(project)
    )
    with anyio.fail_after(GUARD_S):
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            is_error, text = await call(client, "diagnostics")
            _, languages = await call(client, "languages")
            _, refused = await call(client, "diagnostics", path="../outside.py")

    assert names == {"diagnostics", "languages"}
    assert not is_error, text
    assert [(d["file"], d["line"]) for d in json.loads(text)["diagnostics"]] == [("app.py", 4)]
    assert json.loads(languages)["languages"][0]["status"].startswith("running (pid ")
    assert "outside the project root" in refused


async def test_stdio_settings_override_and_bad_settings(project: Path) -> None:
    settings = json.dumps({"python": {"command": ["no-such-language-server"]}})
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "dispatch.servers.lsp", "--root", str(project), "--settings", settings],
    )
    with anyio.fail_after(GUARD_S):
        async with Client(params) as client:
            is_error, text = await call(client, "diagnostics", path="app.py")
    assert is_error
    assert text.endswith(
        ": the configured python server 'no-such-language-server' (config lsp.python.command) is not found"
    )

    done = await anyio.run_process(
        [sys.executable, "-m", "dispatch.servers.lsp", "--root", str(project), "--settings", '{"pyhton": false}'],
        check=False,
    )
    assert done.returncode == 2 and b"pyhton" in done.stderr
