"""The ``lsp`` mount in real agent trees: real litellm against the scripted model server, real MCP
sessions, a real pyright shared by the tree's agents through one ``LspManager``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anyio
import pytest

from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.llm.client import LiteLLMClient
from dispatch.hub.policy.grants import Grants
from dispatch.servers.lsp.manager import LspManager
from tests.agent_helpers import assert_done, call, last_tool_json, tool_messages, top_spec
from tests.fakes.scripted_llm import Reply, ScriptedLLM

pytestmark = pytest.mark.anyio

BROKEN = "def total(xs: list[int]) -> int:\n    return sum(xs)\n\ncount: str = total([1, 2])\n"
GUARD_S = 120
CODER = Grants(lsp=True, write=(".",))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'proj'\n")
    (tmp_path / "app.py").write_text(BROKEN)
    return tmp_path.resolve()


async def test_an_agent_sees_the_error_fixes_it_with_edit_file_and_sees_it_gone(
    scripted_llm: ScriptedLLM, project: Path
) -> None:
    scripted_llm.script(
        "[fixer]",
        [
            Reply(tool_calls=[call("diagnostics", path="app.py")]),
            Reply(tool_calls=[call("edit_file", path="app.py", old="count: str", new="count: int")]),
            Reply(tool_calls=[call("diagnostics", path="app.py")]),
            Reply(text="fixed the type of count"),
        ],
    )
    with anyio.fail_after(GUARD_S):
        async with LspManager() as lsp, AgentTree(project, LiteLLMClient(), lsp=lsp) as tree:
            top = await tree.run(top_spec("[fixer] fix the type errors", grants=CODER))

    assert_done(top)
    requests = scripted_llm.requests_for("[fixer]")
    assert {"diagnostics", "languages", "edit_file"} <= set(requests[0].tool_names)
    [before] = last_tool_json(requests[1].messages)["diagnostics"]
    assert (before["line"], before["code"]) == (4, "reportAssignmentType")
    assert 'declared type "str"' in before["message"]
    assert last_tool_json(requests[3].messages)["diagnostics"] == []
    assert (project / "app.py").read_text() == BROKEN.replace("count: str", "count: int")


async def test_without_the_lsp_grant_there_is_no_diagnostics_tool(scripted_llm: ScriptedLLM, project: Path) -> None:
    scripted_llm.script("[plain]", [Reply(text="nothing to check with")])
    scripted_llm.script("[checker]", [Reply(text="I could check")])
    async with LspManager() as lsp, AgentTree(project, LiteLLMClient(), lsp=lsp) as tree:
        plain = await tree.run(top_spec("[plain] look around", grants=Grants(write=(".",))))
        checker = await tree.run(top_spec("[checker] look around", grants=CODER))
    async with AgentTree(project, LiteLLMClient()) as tree_without_servers:
        scripted_llm.script("[no-manager]", [Reply(text="no servers in this hub")])
        no_manager = await tree_without_servers.run(top_spec("[no-manager] look around", grants=CODER))

    for agent in (plain, checker, no_manager):
        assert_done(agent)
    assert "diagnostics" not in scripted_llm.requests_for("[plain]")[0].tool_names
    assert {"diagnostics", "languages"} <= set(scripted_llm.requests_for("[checker]")[0].tool_names)
    assert "diagnostics" not in scripted_llm.requests_for("[no-manager]")[0].tool_names


async def test_two_agents_in_one_project_share_one_language_server(scripted_llm: ScriptedLLM, project: Path) -> None:
    for name in ("first", "second"):
        scripted_llm.script(
            f"[{name}]",
            [
                Reply(tool_calls=[call("diagnostics", path="app.py")]),
                Reply(tool_calls=[call("languages")]),
                Reply(text=f"{name} checked"),
            ],
        )
    with anyio.fail_after(GUARD_S):
        async with LspManager() as lsp, AgentTree(project, LiteLLMClient(), lsp=lsp) as tree:
            first = tree.start(top_spec("[first] check app.py", grants=CODER))
            second = tree.start(top_spec("[second] check app.py", grants=CODER))
            await first.finished.wait()
            await second.finished.wait()
            pid = lsp.pid(project, "python")

    assert_done(first)
    assert_done(second)
    pids: set[int] = set()
    for name in ("first", "second"):
        messages = scripted_llm.requests_for(f"[{name}]")[2].messages
        [diagnostic] = json.loads(tool_messages(messages)[-2])["diagnostics"]
        assert diagnostic["line"] == 4
        [python] = json.loads(tool_messages(messages)[-1])["languages"]
        found = re.fullmatch(r"running \(pid (\d+)\)", python["status"])
        assert found is not None, python["status"]
        pids.add(int(found.group(1)))
    assert pids == {pid}
