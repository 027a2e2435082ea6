"""The LSP manager against real language servers: pyright-langserver (the venv's pyright package,
run with the machine's Node) and pylsp (as a config override)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import pytest

from dispatch.servers.lsp.manager import LspManager
from dispatch.servers.lsp.server import LspError
from dispatch.servers.lsp.settings import LanguageOverride, LspSettings
from tests.agent_helpers import until

pytestmark = pytest.mark.anyio

BROKEN = "def total(xs: list[int]) -> int:\n    return sum(xs)\n\ncount: str = total([1, 2])\n"
FIXED = BROKEN.replace("count: str", "count: int")
GUARD_S = 90  # a test that takes longer than this hangs: fail it rather than wait


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'proj'\n")
    (root / "app.py").write_text(BROKEN)
    return root.resolve()


async def test_type_error_at_its_line_then_gone_after_a_fix_on_disk(project: Path) -> None:
    with anyio.fail_after(GUARD_S):
        async with LspManager() as lsp:
            report = await lsp.diagnostics(project, project / "app.py")
            [found] = report.diagnostics
            assert (found.file, found.line, found.column) == ("app.py", 4, 14)
            assert (found.severity, found.source, found.code) == ("error", "Pyright", "reportAssignmentType")
            assert 'Type "int" is not assignable to declared type "str"' in found.message
            assert report.files_checked == 1

            (project / "app.py").write_text(FIXED)  # as a shell command would: the manager is not told
            assert (await lsp.diagnostics(project, project / "app.py")).diagnostics == []

            (project / "app.py").write_text(BROKEN.replace("count: str", "\n\ncount: bytes"))
            [again] = (await lsp.diagnostics(project, project / "app.py")).diagnostics
            assert again.line == 6 and '"bytes"' in again.message


async def test_a_change_to_an_imported_module_shows_in_the_importer(project: Path) -> None:
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "util.py").write_text("def scale(x: int) -> int:\n    return x * 2\n")
    (project / "main.py").write_text("from pkg.util import scale\n\nvalue: int = scale(3)\n")
    with anyio.fail_after(GUARD_S):
        async with LspManager() as lsp:
            assert (await lsp.diagnostics(project, project / "main.py")).diagnostics == []
            await lsp.diagnostics(project, project / "pkg" / "util.py")

            (project / "pkg" / "util.py").write_text("def scale(x: int) -> str:\n    return str(x)\n")
            [found] = (await lsp.diagnostics(project, project / "main.py")).diagnostics

    assert (found.file, found.line, found.code) == ("main.py", 3, "reportAssignmentType")


async def test_workspace_and_directory_diagnostics(project: Path) -> None:
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "bad.py").write_text("import os\n\nresult = undefined_name + 1\n")
    (project / "pkg" / "good.py").write_text("ANSWER = 42\n")
    (project / "node_modules").mkdir()
    (project / "node_modules" / "vendored.py").write_text("this is not python\n")
    with anyio.fail_after(GUARD_S):
        async with LspManager() as lsp:
            workspace = await lsp.diagnostics(project, None)
            directory = await lsp.diagnostics(project, project / "pkg")

    assert [(d.file, d.line) for d in workspace.diagnostics] == [("app.py", 4), ("pkg/bad.py", 3)]
    assert workspace.files_checked == 4 and workspace.notes == []
    assert '"undefined_name" is not defined' in workspace.diagnostics[1].message
    assert [(d.file, d.line) for d in directory.diagnostics] == [("pkg/bad.py", 3)]
    assert directory.files_checked == 3


async def test_a_server_that_dies_is_restarted_on_the_next_call(project: Path) -> None:
    with anyio.fail_after(GUARD_S):
        async with LspManager() as lsp:
            await lsp.diagnostics(project, project / "app.py")
            first = lsp.pid(project, "python")
            assert first is not None
            os.kill(first, signal.SIGKILL)
            await until(lambda: lsp.pid(project, "python") is None)

            report = await lsp.diagnostics(project, project / "app.py")

            second = lsp.pid(project, "python")
    assert second is not None and second != first
    assert [d.line for d in report.diagnostics] == [4]
    assert report.notes == ["the python language server had exited (code -9); it was restarted"]


async def test_shutdown_ends_the_server_process(project: Path) -> None:
    with anyio.fail_after(GUARD_S):
        async with LspManager() as lsp:
            await lsp.diagnostics(project, project / "app.py")
            pid = lsp.pid(project, "python")
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_configured_command_is_used_instead_of_the_detected_server(project: Path) -> None:
    """pylsp instead of pyright; its initialize reply also needs the converter fix."""
    (project / "app.py").write_text("import os\n\nprint(missing_name)\n")
    settings = LspSettings(python=LanguageOverride(command=["pylsp"]))
    with anyio.fail_after(GUARD_S):
        async with LspManager(settings) as lsp:
            [info] = await lsp.languages(project)
            report = await lsp.diagnostics(project, project / "app.py")
            pid = lsp.pid(project, "python")
            cmdline = (await anyio.Path(f"/proc/{pid}/cmdline").read_bytes()).split(b"\0")

    assert (info.server, info.configured) == ("pylsp", True)
    assert any(part.endswith(b"pylsp") for part in cmdline)
    pyflakes = [(d.line, d.message) for d in report.diagnostics if d.source == "pyflakes"]
    assert pyflakes == [(1, "'os' imported but unused"), (3, "undefined name 'missing_name'")]


async def test_configured_settings_reach_the_detected_server(project: Path) -> None:
    """Answered to pyright's ``workspace/configuration``: type checking off, the error is gone."""
    off = LanguageOverride(settings={"python": {"analysis": {"typeCheckingMode": "off"}}})
    with anyio.fail_after(GUARD_S):
        async with LspManager(LspSettings(python=off)) as lsp:
            report = await lsp.diagnostics(project, project / "app.py")
            [info] = await lsp.languages(project)
    assert report.diagnostics == []
    assert (info.server, info.configured) == ("pyright-langserver", False)


async def test_a_missing_server_is_a_clear_error(project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    with anyio.fail_after(GUARD_S):
        async with LspManager(search_path=str(empty)) as lsp:
            with pytest.raises(LspError, match=r"no python language server found .* install: pip install pyright"):
                await lsp.diagnostics(project, project / "app.py")
            [info] = await lsp.languages(project)
    assert info.status.startswith("unavailable: no python language server found")


async def test_a_server_that_never_answers_times_out_with_a_message(project: Path) -> None:
    silent = LanguageOverride(command=[sys.executable, "-c", "import time; time.sleep(120)"])
    with anyio.fail_after(GUARD_S):
        async with LspManager(LspSettings(python=silent), timeout_s=2) as lsp:
            with pytest.raises(LspError, match=r"gave no answer within 2 s \(starting\)"):
                await lsp.diagnostics(project, project / "app.py")
            assert lsp.pid(project, "python") is None


async def test_a_server_that_crashes_at_start_says_what_it_printed(project: Path) -> None:
    crash = LanguageOverride(command=[sys.executable, "-c", "import sys; sys.exit('no config for you')"])
    with anyio.fail_after(GUARD_S):
        async with LspManager(LspSettings(python=crash)) as lsp:
            with pytest.raises(LspError, match=r"exited \(code 1\); its last output: no config for you"):
                await lsp.diagnostics(project, project / "app.py")


async def test_files_no_server_handles_and_missing_files(project: Path) -> None:
    (project / "notes.txt").write_text("hello\n")
    async with LspManager() as lsp:
        with pytest.raises(LspError, match=r"no language server handles \.txt files"):
            await lsp.diagnostics(project, project / "notes.txt")
        with pytest.raises(LspError, match=r"'gone\.py': not found"):
            await lsp.diagnostics(project, project / "gone.py")
        assert lsp.pid(project, "python") is None  # nothing started for either
