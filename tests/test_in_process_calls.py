"""A tool of Dispatch's own server that takes no request context can be called in the hub's process
without an MCP session (``ServerPlan.call``, the hub's path for ``fs``): what it answers is what
``tools/call`` over a real session answers, success or failure, argument errors and crashes alike;
a tool that takes a context (progress, questions back) is left to the session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from dispatch.servers import shell
from dispatch.servers._base import ServerPlan, ToolList
from dispatch.servers.fs import server as fs

pytestmark = pytest.mark.anyio


def _crash(path: str) -> str:
    """A tool that fails by accident."""
    raise RuntimeError(f"secret detail of {path}")


async def _both(plan: ServerPlan, name: str, arguments: dict[str, Any], root: Path | None = None) -> tuple[Any, Any]:
    direct = await plan.call(plan.build(), name, arguments)
    if root is not None and name == "write_file":  # the session's call makes it anew too
        (root / arguments["path"]).unlink()
    async with Client(plan.build()) as client:
        session = await client.call_tool(name, arguments)
    return direct, session


async def test_a_call_without_a_session_answers_as_tools_call_does(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("one\ntwo\n")
    plan = fs.plan_server(tmp_path, [tmp_path])
    crashing = ToolList()
    crashing.add(_crash, name="crash")
    cases: list[tuple[ServerPlan, str, dict[str, Any]]] = [
        (plan, "read_file", {"path": "notes.txt"}),
        (plan, "read_file", {"path": "missing.txt"}),  # the tool's own error
        (plan, "read_file", {"path": "notes.txt", "offset": 0}),  # arguments the schema refuses
        (plan, "read_file", {}),
        (plan, "write_file", {"path": "out/new.txt", "content": "made"}),
        (plan, "no_such_tool", {}),
        (ServerPlan("crashing", "", crashing), "crash", {"path": "x"}),  # an accident: no detail leaks
    ]
    for server, name, arguments in cases:
        assert server.calls_without_session(name) or name == "no_such_tool"
        direct, session = await _both(server, name, arguments, tmp_path)
        assert direct.is_error == session.is_error, (name, arguments)
        assert direct.content == session.content, (name, arguments)
    assert (tmp_path / "out" / "new.txt").read_text() == "made"
    direct, _ = await _both(ServerPlan("crashing", "", crashing), "crash", {"path": "x"})
    assert direct.is_error and "secret detail" not in str(direct.content)


def test_a_tool_that_reports_progress_keeps_its_session(tmp_path: Path) -> None:
    plan = shell.plan_server(tmp_path)
    assert not plan.calls_without_session("run")  # its output streams as progress notifications
    assert fs.plan_server(tmp_path).calls_without_session("read_file")
