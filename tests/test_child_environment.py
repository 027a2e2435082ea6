"""Every process Dispatch starts for its agents gets the hub's environment without credentials: the
stdio tool servers of an isolated agent, a language server, an outside stdio MCP server. What a
child needs still reaches it: the data directory (``DISPATCH_HOME``) for the tool servers' denied
set, and an outside server's own configured ``env``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
import yaml

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.llm.client import LiteLLMClient
from dispatch.hub.policy.grants import Grants
from dispatch.servers.lsp.manager import LspManager
from dispatch.servers.lsp.settings import LanguageOverride, LspSettings
from tests.agent_helpers import assert_done, call, make_tree, tool_messages, top_spec
from tests.fakes import probe_mcp
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM

pytestmark = pytest.mark.anyio

HUB_SECRETS = {
    "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "DATABASE_URL": "postgres://user:pw@host/db",
}


@pytest.fixture(autouse=True)
def hub_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in HUB_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INNOCENT_VARIABLE", "still-here")


def environ_of(pid: int) -> dict[str, str]:
    """A process's environment as it started, as ``/proc`` shows it to anyone who looks."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.split("=", 1) for entry in raw.decode().split("\0") if "=" in entry)


def processes_running(*argv: str) -> list[int]:
    """The pids of live processes whose command line contains ``argv`` in a row."""
    wanted = "\0".join(argv) + "\0"
    pids: list[int] = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if wanted in (proc / "cmdline").read_text():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def assert_scrubbed(env: dict[str, str]) -> None:
    assert set(HUB_SECRETS).isdisjoint(env), set(HUB_SECRETS) & set(env)
    assert "pw@host" not in "\n".join(env.values())
    assert env.get("INNOCENT_VARIABLE") == "still-here"
    assert env.get("PATH") == os.environ["PATH"] and env.get("HOME") == os.environ["HOME"]


async def test_an_isolated_agents_stdio_tool_servers_start_without_the_hubs_credentials(
    scripted_llm: ScriptedLLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = (tmp_path / "project").resolve()
    data = root / "data"  # the hub's data directory, inside the project: always denied all the same
    data.mkdir(parents=True)
    (data / "notes.txt").write_text("the hub's own")
    monkeypatch.setenv("DISPATCH_HOME", str(data))
    seen: dict[str, dict[str, str]] = {}

    def look(request: RecordedRequest) -> Reply:
        for module in ("dispatch.servers.fs", "dispatch.servers.shell"):
            [pid] = processes_running("-m", module, "--root", str(root))
            seen[module] = environ_of(pid)
        return Reply(tool_calls=[call("read_file", path="data/notes.txt")])

    scripted_llm.script("[iso]", [look, Reply(text="done")])
    async with make_tree(root) as tree:
        top = await tree.run(top_spec("[iso] look around", grants=Grants(shell=True), isolated=True))

    assert_done(top)
    [refused] = tool_messages(scripted_llm.requests_for("[iso]")[1].messages)
    assert "is always denied (Dispatch's own data directory" in refused
    assert set(seen) == {"dispatch.servers.fs", "dispatch.servers.shell"}
    for env in seen.values():
        assert_scrubbed(env)
        assert env["DISPATCH_HOME"] == str(data)


async def test_a_language_server_starts_without_the_hubs_credentials(tmp_path: Path) -> None:
    root = (tmp_path / "proj").resolve()
    root.mkdir()
    (root / "app.py").write_text("print(missing_name)\n")
    settings = LspSettings(python=LanguageOverride(command=["pylsp"]))
    with anyio.fail_after(90):
        async with LspManager(settings) as lsp:
            await lsp.diagnostics(root, root / "app.py")
            pid = lsp.pid(root, "python")
            assert pid is not None
            env = environ_of(pid)
    assert_scrubbed(env)


async def test_an_outside_stdio_server_gets_its_configured_env_and_not_the_hubs_credentials(
    scripted_llm: ScriptedLLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBE_TOKEN", "sesame")
    root = tmp_path / "project"
    probe = {
        "command": sys.executable,
        "args": [probe_mcp.__file__],
        "env": {"PROBE_MODE": "configured", "PROBE_TOKEN": "${PROBE_TOKEN}"},
    }
    config = root / ".dispatch" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"mcp_servers": {"probe": probe}}))
    scripted_llm.script("[probe]", [Reply(tool_calls=[call("pid")]), Reply(text="done")])

    async with AgentTree(root, LiteLLMClient(), catalog=Catalog.load(root)) as tree:
        top = await tree.run(top_spec("[probe] which process", grants=Grants(mcp_servers=("probe",))))
        assert_done(top)
        answer = tool_messages(scripted_llm.requests_for("[probe]")[1].messages)[0]
        pid = int(next(line for line in answer.splitlines() if line.strip().isdigit()))
        env = environ_of(pid)  # the server is the hub's, still running

    assert_scrubbed(env)
    assert env["PROBE_MODE"] == "configured"
    assert env["PROBE_TOKEN"] == "sesame", "a credential the config gives the server reaches it"
