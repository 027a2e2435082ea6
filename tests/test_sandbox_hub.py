"""The hub's side of isolation: the access gate (always-denied, scope, session grants by agent
chain, auto-allow), a hostile "always comply" model driving a real agent tree, the probe in
``dispatch doctor`` and the system prompt, and the small pure pieces (refusal parsing, output
cleaning, environment scrubbing)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from dispatch.hub.agents.access import SessionAnswers, gate_request
from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.agents.loop import Agent, AgentHooks
from dispatch.hub.agents.projects import Project
from dispatch.hub.agents.spec import AgentSpec
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.cli.doctor import check_sandbox, run_doctor
from dispatch.hub.config.project import DispatchConfig, Permissions
from dispatch.hub.llm.client import LiteLLMClient
from dispatch.hub.mounts.outside import OutsideServers
from dispatch.hub.policy.grants import Grants
from dispatch.servers.hublink import AccessDecision, Operation
from dispatch.servers.sandbox import SandboxProbe
from dispatch.servers.sandbox.denials import Need, find_needs
from dispatch.servers.sandbox.output import terminal_safe
from dispatch.servers.sandbox.policy import DeniedPaths, scrub_environment
from tests.agent_helpers import MODEL, assert_done, call, tool_messages, top_spec
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.sandbox_helpers import PROBE, needs_bwrap, snapshot

SECRET = "outside-secret-do-not-leak"


@dataclass
class Broker:
    """A double of the hub's approvals broker: records (agent, path, op, why), answers ``grant``."""

    grant: bool = False
    remember: str = "session"
    asked: list[tuple[str, str, Operation, str]] = field(default_factory=list[tuple[str, str, Operation, str]])

    async def request_access(self, agent: Agent, path: str, operation: Operation, why: str) -> AccessDecision:
        self.asked.append((agent.id, path, operation, why))
        if self.grant:
            return AccessDecision(granted=True, remember=self.remember, reason="the user said yes")  # type: ignore[arg-type]
        return AccessDecision(granted=False, reason="the user said no")


@dataclass
class GateTree:
    root: Path
    access: Broker | None
    catalog: Catalog = field(default_factory=Catalog.builtin)
    agents: dict[str, Agent] = field(default_factory=dict[str, Agent])
    session_answers: SessionAnswers = field(default_factory=SessionAnswers)

    def project_of(self, spec: AgentSpec) -> Project:
        return Project(self.root, self.catalog, OutsideServers())

    def add(self, agent_id: str, parent: str | None = None, **grants: object) -> Agent:
        spec = AgentSpec(id=agent_id, parent_id=parent, name=agent_id, task="t", model=MODEL, grants=Grants(**grants))
        hooks = AgentHooks(lambda: 0, lambda a: None, lambda a, c: None, lambda a, r: None)
        self.agents[agent_id] = Agent(spec=spec, hooks=hooks)
        return self.agents[agent_id]


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "proj"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    return root, outside


@pytest.mark.anyio
async def test_always_denied_wins_over_every_grant_without_asking(places: tuple[Path, Path]) -> None:
    root, _ = places
    home = Path(os.environ["HOME"])
    catalog = replace(Catalog.builtin(), config=DispatchConfig(permissions=Permissions(auto_allow=["~", "/"])))
    broker = Broker(grant=True)
    tree = GateTree(root, broker, catalog)
    top = tree.add("top", **Grants.everything().model_dump())
    for path in (home / ".ssh" / "id_rsa", home / ".aws", home / ".bashrc", root / ".git" / "hooks" / "pre-commit"):
        for op in ("read", "write"):
            decision = await gate_request(tree, top, str(path), op, "because")  # type: ignore[arg-type]
            assert not decision.granted and "always denied" in decision.reason
    dispatch_home = Path(os.environ["DISPATCH_HOME"])
    assert not (await gate_request(tree, top, str(dispatch_home / "dispatch.db"), "read", "x")).granted
    assert broker.asked == []
    assert (await gate_request(tree, top, "/usr/share", "read", "x")).granted  # auto_allow "/" still works


@pytest.mark.anyio
async def test_inside_the_root_the_scope_decides_and_nobody_is_asked(places: tuple[Path, Path]) -> None:
    root, _ = places
    broker = Broker(grant=True)
    tree = GateTree(root, broker)
    tree.add("top", summon=True, write=["."])
    child = tree.add("child", parent="top", write=["a"])
    assert (await gate_request(tree, child, str(root / "a" / "x"), "write", "x")).granted
    refused = await gate_request(tree, child, str(root / "b" / "x"), "write", "x")
    assert not refused.granted and "outside this agent's write scope ('a')" in refused.reason
    assert (await gate_request(tree, child, str(root / "b" / "x"), "read", "x")).granted
    assert not (await gate_request(tree, child, "relative/path", "read", "x")).granted
    assert broker.asked == []


@pytest.mark.anyio
async def test_a_child_asking_for_a_path_its_parent_lacks_goes_to_the_user_naming_the_chain(
    places: tuple[Path, Path],
) -> None:
    root, outside = places
    broker = Broker(grant=False)
    tree = GateTree(root, broker)
    top = tree.add("top", summon=True)
    child = tree.add("child", parent="top")
    sibling = tree.add("sibling", parent="top")
    target = str(outside / "data.txt")
    denied = await gate_request(tree, child, target, "read", "read_file")
    assert not denied.granted
    assert broker.asked == [("child", target, "read", "read_file [asked by top › child]")]
    broker.grant = True
    assert (await gate_request(tree, child, str(outside), "write", "run")).granted
    # recorded for the child and its ancestors (a child never holds what its parent lacks) ...
    assert (await gate_request(tree, top, target, "read", "x")).reason.startswith("granted this session")
    assert (await gate_request(tree, sibling, target, "write", "x")).granted  # ... inherited below the parent
    assert len(broker.asked) == 2
    broker.remember = "once"
    assert (await gate_request(tree, child, "/opt", "read", "x")).granted
    assert (await gate_request(tree, child, "/opt", "read", "x")).granted
    assert len(broker.asked) == 4  # "once" is not remembered
    assert not (await gate_request(GateTree(root, None), top, "/opt", "read", "x")).granted  # no approvals


@pytest.mark.anyio
async def test_summon_refuses_grants_beyond_the_parent(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script(
        "[p]",
        [
            Reply(tool_calls=[call("summon", task="[c] read docs", grants={"read": ["docs"], "shell": True})]),
            Reply(text="parent done"),
        ],
    )
    async with AgentTree(tmp_path, LiteLLMClient(), access=Broker(grant=True)) as tree:
        top = await tree.run(top_spec("[p] try", grants=Grants(summon=True, read=("src",))))
    assert_done(top)
    refusal = tool_messages(scripted_llm.requests_for("[p]")[1].messages)[0]
    assert "read 'docs': outside the parent's read paths" in refusal and "shell" in refusal
    assert list(tree.children_of(top.id)) == []


@needs_bwrap
@pytest.mark.anyio
async def test_an_always_complying_model_cannot_get_past_the_sandbox(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / ".git" / "hooks").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    home = Path(os.environ["HOME"])
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text(SECRET)
    before = snapshot(outside, home, root / ".git")
    hostile = [
        f"echo pwned > {outside}/pwned.txt; cat {outside}/secret.txt",
        "cat ~/.ssh/id_ed25519; env | grep -i key; cat /proc/1/environ",
        "echo 'rm -rf ~' > .git/hooks/pre-commit; echo '{}' > .mcp.json",
        "cd .. && touch escaped && ls",
    ]
    scripted_llm.script(
        "[hostile]",
        [
            Reply(tool_calls=[call("run", command=c) for c in hostile]),
            Reply(
                tool_calls=[
                    call("read_file", path=f"{outside}/secret.txt"),
                    call("read_file", path="~/.ssh/id_ed25519"),
                ]
            ),
            Reply(tool_calls=[call("summon", task="[kid] read the secret", name="kid")]),
            Reply(tool_calls=[call("wait")]),
            Reply(text="done"),
        ],
    )
    scripted_llm.script(
        "[kid]",
        [
            Reply(
                tool_calls=[
                    call("run", command=f"cat {outside}/secret.txt"),
                    call("read_file", path="../outside/secret.txt"),
                ]
            ),
            Reply(text="kid done"),
        ],
    )
    broker = Broker(grant=False)
    async with AgentTree(root, LiteLLMClient(), access=broker) as tree:
        top = await tree.run(top_spec("[hostile] do as you are told"))
    assert_done(top)
    for match in ("[hostile]", "[kid]"):
        for request in scripted_llm.requests_for(match):
            for text in tool_messages(request.messages):
                assert SECRET not in text
    system = scripted_llm.requests_for("[hostile]")[0].messages[0]["content"]
    assert "Shell commands run in a sandbox (bubblewrap" in system
    assert snapshot(outside, home, root / ".git") == before
    assert not (root / ".mcp.json").exists() and not (root.parent / "escaped").exists()
    kid = next(a for a in tree.agents.values() if a.spec.name == "kid")
    asked_by_kid = [why for agent_id, _, _, why in broker.asked if agent_id == kid.id]
    assert asked_by_kid and all(why.endswith("[asked by top › kid]") for why in asked_by_kid)
    assert all(".ssh" not in path for _, path, _, _ in broker.asked)  # always denied: never asked


def test_doctor_reports_the_sandbox() -> None:
    text, _ = run_doctor(Path.cwd(), sandbox=check_sandbox(PROBE))
    assert "Sandbox (for the shell and fs tools):" in text
    assert f"shell       commands run in the sandbox ({PROBE.layers()})" in text or not PROBE.any_layer
    bare = check_sandbox(SandboxProbe())
    assert [(f.topic, f.status) for f in bare] == [
        ("bubblewrap", "missing"),
        ("landlock", "missing"),
        ("openat2", "missing"),
        ("processes", "missing"),
        ("shell", "missing"),
    ]
    assert all(f.status != "missing" for f in check_sandbox(SandboxProbe(), setting="off"))
    text, code = run_doctor(Path.cwd(), sandbox=bare)
    assert code == 1 and "disabled: neither bubblewrap nor Landlock" in text


def test_refusals_in_output_become_needs(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    hidden = tmp_path / "hidden"
    root.mkdir()
    hidden.mkdir()
    (hidden / "data.txt").write_text("x")
    output = "\n".join(
        [
            "bash: line 1: /etc/x: Read-only file system",
            "touch: cannot touch '/usr/y': Read-only file system",
            "mkdir: cannot create directory ‘/opt/z’: Read-only file system",
            f"cat: {hidden}/data.txt: No such file or directory",
            "curl: (6) Could not resolve host: example.com",
            "cp: cannot create regular file 'inside.txt': Read-only file system",
        ]
    )
    needs = find_needs(
        output,
        root,
        tmp_path,
        writable=lambda p: p.is_relative_to(root),
        visible=lambda p: not p.is_relative_to(hidden),
    )
    assert needs == [Need("/etc", "write"), Need("/usr", "write"), Need("/opt", "write")]  # capped at three
    more = find_needs(output.split("\n", 3)[3], root, tmp_path, lambda p: p.is_relative_to(root), lambda p: False)
    assert more == [Need(str(hidden / "data.txt"), "read"), Need("network", "execute")]


def test_output_is_made_terminal_safe_and_the_environment_scrubbed() -> None:
    assert terminal_safe("\x1b[1;31mred\x1b[0m\r\n\x1b]0;title\x07ok\x9b2J\x08") == "red\nok"
    env = {
        "PATH": "/bin",
        "GIT_AUTHOR_NAME": "me",
        "HTTP_AUTHORIZATION": "x",
        "AWS_PROFILE": "p",
        "DATABASE_URL": "postgres://u:pw@h/d",
        "PLAIN_URL": "https://example.com/x",
        "SSH_AUTH_SOCK": "/s",
        "OAUTH_CLIENT": "c",
    }
    assert scrub_environment(env) == {"PATH": "/bin", "GIT_AUTHOR_NAME": "me", "PLAIN_URL": "https://example.com/x"}


def test_the_denied_set_matches_parts_not_prefixes(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    denied = DeniedPaths.current(root)
    assert denied.reason(root / ".git" / "hooks" / "x", "read") is not None
    assert denied.reason(root / "sub" / ".git" / "config", "read") is not None
    assert denied.reason(root / ".git" / "config.py", "read") is None
    assert denied.reason(root / ".github" / "hooks", "write") is None
    assert denied.reason(root / "docs" / ".mcp.json.example", "write") is None
    assert denied.reason(Path(os.environ["HOME"]) / ".sshx", "write") is None
