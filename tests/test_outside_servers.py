"""Outside MCP servers from config (``mcp_servers``): granted by templates and summon (narrowed to
some tools, never more than the parent has), one process per hub unless ``per_agent``, reached over
stdio and streamable HTTP, their results marked untrusted; and the config's mistakes, named."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from starlette.types import ASGIApp, Receive, Scope, Send

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.errors import ConfigError
from dispatch.hub.events import EventBus
from dispatch.hub.llm.client import LiteLLMClient
from dispatch.hub.policy.grants import Grants
from dispatch.hub.service.approvals import Approvals
from dispatch.hub.service.hub import gated_tree
from dispatch.hub.store.db import Store
from dispatch.servers.hublink import GrantRequest
from tests.agent_helpers import assert_done, call, tool_messages, top_spec
from tests.fakes import probe_mcp
from tests.fakes.scripted_llm import RecordedRequest, Reply, ScriptedLLM

PROBE = Path(probe_mcp.__file__).resolve()
PROBE_TOOLS = {"echo", "add", "pid"}


def stdio_probe(*args: str, **extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": [str(PROBE), *args], **extra}


def write_config(root: Path, servers: dict[str, Any]) -> Path:
    path = root / ".dispatch" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"mcp_servers": servers}))
    return path


def write_template(root: Path, name: str, text: str) -> Path:
    path = root / ".dispatch" / "templates" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@asynccontextmanager
async def hub_tree(root: Path) -> AsyncIterator[tuple[AgentTree, Approvals]]:
    """A tree on ``root``'s config with the store, approvals and tool pins, as the hub composes them."""
    catalog = Catalog.load(root)
    async with Store.open(root.parent / "dispatch.db") as store:
        tree, approvals = gated_tree(root, LiteLLMClient(), EventBus(), catalog, store)
        async with tree:
            yield tree, approvals


def schema_of(request: RecordedRequest, tool: str) -> dict[str, Any]:
    return next(t["function"] for t in request.tools if t["function"]["name"] == tool)


# ---- stdio: grants, narrowing, one process per hub ----------------------------------------------


@pytest.mark.anyio
async def test_templates_and_summon_grant_outside_servers_within_the_parents(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    write_config(root, {"probe": stdio_probe()})
    write_template(root, "prober", "tools: {fs: true, probe: true}\n")
    write_template(root, "narrow", "tools:\n  fs: true\n  probe: [echo]\n")
    scripted_llm.script(
        "[top]",
        [
            Reply(
                tool_calls=[
                    call("pid"),
                    call("summon", task="[a] use the probe", template="prober"),
                    call("summon", task="[b] echo only", template="narrow"),
                    call("summon", task="[c] no grant"),
                    call("summon", task="[d] add only", grants={"mcp_servers": {"probe": ["add"]}}),
                ]
            ),
            Reply(tool_calls=[call("wait")]),
            Reply(text="all done"),
        ],
    )
    scripted_llm.script("[a]", [Reply(tool_calls=[call("echo", text="hi"), call("pid")]), Reply(text="a done")])
    scripted_llm.script("[b]", [Reply(tool_calls=[call("pid")]), Reply(text="b done")])
    scripted_llm.script("[c]", [Reply(text="c done")])
    scripted_llm.script("[d]", [Reply(tool_calls=[call("add", a=2, b=3)]), Reply(text="d done")])

    async with hub_tree(root) as (tree, _):
        top = await tree.run(top_spec("[top] fan out"))
    assert_done(top)
    first, last, _ = scripted_llm.requests_for("[top]")
    assert set(first.tool_names) >= PROBE_TOOLS
    echo = schema_of(first, "echo")
    assert echo["description"] == "Echo the text back."
    assert echo["parameters"]["properties"]["text"]["type"] == "string"
    top_pid = tool_messages(last.messages)[0]
    assert "[untrusted data from probe.pid" in top_pid

    a_first, a_last = scripted_llm.requests_for("[a]")
    assert set(a_first.tool_names) >= PROBE_TOOLS
    echoed, a_pid = tool_messages(a_last.messages)
    assert "echo: hi" in echoed and "[untrusted data from probe.echo" in echoed
    assert _pid(a_pid) == _pid(top_pid), "one probe process serves the whole hub"

    b_first, b_last = scripted_llm.requests_for("[b]")
    assert PROBE_TOOLS & set(b_first.tool_names) == {"echo"}
    assert tool_messages(b_last.messages)[0].startswith("Error: pid is not one of your tools (refused)")

    [c_first] = scripted_llm.requests_for("[c]")
    assert not PROBE_TOOLS & set(c_first.tool_names)

    d_first, d_last = scripted_llm.requests_for("[d]")
    assert PROBE_TOOLS & set(d_first.tool_names) == {"add"}
    assert "\n5\n" in tool_messages(d_last.messages)[0]
    children = {c.spec.task[:3]: c.spec.grants for c in tree.children_of(top.id)}
    assert children["[a]"].mcp_servers == ("probe",) and "probe" not in children["[a]"].tools
    assert children["[b]"].tools["probe"] == ("echo",)
    assert children["[c]"].mcp_servers == ()
    assert children["[d]"].mcp_servers == ("probe",) and children["[d]"].tools["probe"] == ("add",)


def _pid(marked: str) -> str:
    return next(line for line in marked.splitlines() if line.strip().isdigit())


@pytest.mark.anyio
async def test_a_child_never_gets_a_server_or_tool_its_parent_lacks(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    root = tmp_path / "project"
    write_config(root, {"probe": stdio_probe(), "other": stdio_probe()})
    write_template(root, "prober", "tools: {fs: true, probe: true}\n")
    parent = Grants(summon=True, mcp_servers=("probe",), tools={"probe": ("echo",)})
    scripted_llm.script(
        "[lean]",
        [
            Reply(
                tool_calls=[
                    call("summon", task="[x] other", grants={"mcp_servers": {"other": True}}),
                    call("summon", task="[x] more tools", grants={"mcp_servers": {"probe": ["echo", "pid"]}}),
                    call("summon", task="[x] all", grants={"mcp_servers": True}, wait=True),
                    call("summon", task="[x] template", template="prober"),
                ]
            ),
            Reply(text="nothing started"),
        ],
    )
    scripted_llm.script("[x] all", [Reply(text="fine")])

    async with hub_tree(root) as (tree, _):
        top = await tree.run(top_spec("[lean] try", grants=parent))

    assert_done(top)
    other, more, everything, template = tool_messages(scripted_llm.requests_for("[lean]")[1].messages)
    assert "summon refused" in other and "mcp server 'other': the parent has no other grant (it has probe)" in other
    assert "probe tools pid: the parent may use only echo" in more
    assert not everything.startswith("Error"), everything  # true: as much as the parent has
    assert "template 'prober' asks for more than you have" in template
    assert "probe tools all of them: the parent may use only echo" in template
    [child] = tree.children_of(top.id)
    assert child.spec.grants.mcp_servers == ("probe",) and child.spec.grants.tools["probe"] == ("echo",)


def test_grants_of_outside_servers_follow_the_subset_rule() -> None:
    top = Grants.everything()
    assert top.mcp_servers == "all" and top.serves("anything-configured")
    child = top.for_child(GrantRequest(), ())
    assert child.mcp_servers == () and not child.serves("github") and child.serves("fs")
    narrowed = top.for_child(GrantRequest(mcp_servers={"github": ["get_issue"], "jira": False}), ())
    assert narrowed.mcp_servers == ("github",) and narrowed.tools["github"] == ("get_issue",)
    assert narrowed.excess_over(top) == []
    grandchild = narrowed.for_child(GrantRequest(mcp_servers=True), ())
    assert grandchild.mcp_servers == ("github",) and grandchild.excess_over(narrowed) == []
    wider = narrowed.for_child(GrantRequest(mcp_servers={"github": True, "jira": True}), ())
    assert wider.excess_over(narrowed) == [
        "mcp server 'jira': the parent has no jira grant (it has github)",
    ]
    all_of_them = Grants(mcp_servers="all")
    assert all_of_them.excess_over(narrowed) == [
        "mcp_servers: all of them, but the parent has only github",
        "github tools all of them: the parent may use only get_issue",
    ]
    assert Grants.model_validate_json(narrowed.model_dump_json()) == narrowed


# ---- one process per agent ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_per_agent_servers_start_one_process_per_agent(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    root = tmp_path / "project"
    write_config(root, {"probe": stdio_probe(per_agent=True)})
    for tag in ("[one]", "[two]"):
        scripted_llm.script(tag, [Reply(tool_calls=[call("pid")], delay_s=0.2), Reply(text="ok")])

    async with hub_tree(root) as (tree, _):
        one, two = tree.start(top_spec("[one] pid")), tree.start(top_spec("[two] pid"))
        await one.finished.wait()
        await two.finished.wait()

    assert_done(one)
    assert_done(two)
    pids = {_pid(tool_messages(scripted_llm.requests_for(tag)[1].messages)[0]) for tag in ("[one]", "[two]")}
    assert len(pids) == 2


# ---- streamable HTTP, and servers that fail -------------------------------------------------------


class _NeedsToken:
    """Answers 401 unless the request carries ``X-Probe-Token: sesame``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (b"x-probe-token", b"sesame") not in scope["headers"]:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"no token"})
            return
        await self.app(scope, receive, send)


@pytest.fixture
def http_probe() -> Iterator[str]:
    """The probe server over streamable HTTP (uvicorn, a free port, a thread); yields its URL."""
    server_app = probe_mcp.build().streamable_http_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(_NeedsToken(server_app), log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.anyio
async def test_http_servers_send_headers_and_failures_name_the_server(
    scripted_llm: ScriptedLLM, http_probe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBE_TOKEN", "sesame")
    root = tmp_path / "project"
    broken = {"command": sys.executable, "args": ["-c", "raise SystemExit(3)"]}
    write_config(
        root,
        {
            "web-probe": {"url": http_probe, "headers": {"X-Probe-Token": "${PROBE_TOKEN}"}},
            "locked": {"url": http_probe},
            "broken": broken,
            "probe": stdio_probe(),
        },
    )
    scripted_llm.script("[h]", [Reply(tool_calls=[call("echo", text="over http")]), Reply(text="ok")])

    async with hub_tree(root) as (tree, _):
        http = await tree.run(top_spec("[h] call", grants=Grants(mcp_servers=("web-probe",))))
        locked = await tree.run(top_spec("[locked] call", grants=Grants(mcp_servers=("locked",))))
        failed = await tree.run(top_spec("[broken] call", grants=Grants(mcp_servers=("broken",))))
        clash = await tree.run(top_spec("[clash] call", grants=Grants(mcp_servers=("web-probe", "probe"))))
        views = {v.name: v for v in await tree.outside.views()}

    assert_done(http)
    first, last = scripted_llm.requests_for("[h]")
    assert set(first.tool_names) >= PROBE_TOOLS
    assert "echo: over http" in tool_messages(last.messages)[0]
    assert locked.error is not None and locked.error.startswith(
        f"the outside MCP server 'locked' (http: {http_probe}) failed to start:"
    )
    assert failed.error is not None and failed.error.startswith(
        f"the outside MCP server 'broken' (stdio: {sys.executable} -c raise SystemExit(3)) failed to start:"
    )
    assert clash.error == "tool 'echo' is offered by both 'web-probe' and 'probe'"
    assert (views["web-probe"].transport, views["web-probe"].state) == ("http", "pinned")
    assert (views["locked"].state, views["broken"].state) == ("failed", "failed")
    assert {t.name for t in views["web-probe"].tools} == PROBE_TOOLS


# ---- config mistakes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("servers", "expected"),
    [
        ({"github": {"command": "gh-mcp", "argz": []}}, "line 3: mcp_servers.github.argz: unknown field; expected "
         "one of: command, args, env, cwd, url, headers, per_agent"),
        ({"fs": {"command": "x"}}, "line 2: mcp_servers.fs: 'fs' is the name of a built-in tool server"),
        ({"github": {"command": "x", "env": {"TOKEN": "${DISPATCH_TEST_UNSET}"}}},
         "line 5: mcp_servers.github.env.TOKEN: expected the environment variable DISPATCH_TEST_UNSET to be set"),
        ({"github": {"url": "http://x/mcp", "headers": {"A": "${DISPATCH_TEST_UNSET}"}}},
         "line 4: mcp_servers.github.headers.A: expected the environment variable DISPATCH_TEST_UNSET"),
        ({"github": {"url": "http://x/mcp", "command": "x"}}, "line 2: mcp_servers.github: expected either command"),
        ({"github": {"url": "http://x/mcp", "env": {"A": "b"}}}, "line 2: mcp_servers.github: env apply to a stdio"),
    ],
)  # fmt: skip
def test_config_mistakes_name_file_line_and_field(tmp_path: Path, servers: dict[str, Any], expected: str) -> None:
    path = write_config(tmp_path, servers)

    with pytest.raises(ConfigError) as raised:
        Catalog.load(tmp_path)

    assert str(raised.value).startswith(f"{path} {expected}")


def test_a_template_naming_an_unknown_server_is_refused_at_load(tmp_path: Path) -> None:
    write_config(tmp_path, {"probe": stdio_probe()})
    bad = write_template(tmp_path, "scout", "tools:\n  fs: true\n  githb: [get_issue]\n")

    with pytest.raises(ConfigError) as raised:
        Catalog.load(tmp_path)

    assert str(raised.value) == (
        f"{bad} line 3: tools.githb: unknown tool server 'githb'; expected a built-in one (fs, shell, summon, lsp, "
        "web) or one of the config's mcp_servers (probe)"
    )
    write_template(tmp_path, "scout", "tools:\n  probe: 3\n")
    with pytest.raises(ConfigError) as raised:
        Catalog.load(tmp_path)
    assert str(raised.value).startswith(f"{bad} line 2: tools.probe: expected true or false or a list, got 3")
