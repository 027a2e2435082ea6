"""Agents' tool servers on a Ray cluster (``execution.engine: ray``): a real hub with the in-process
scripted model, real tool hosts as Ray actors reached through MCP sessions over actor calls, real
fs and shell calls. First the hub's own local Ray instance (started with the hub, gone after it),
then a two-node cluster simulated on this machine (Ray's ``cluster_utils``) that the hub joins:
leaves placed on the second node by a resource, their changes merged back, leaves forced to work
in a copy of the project there (``placement: {files: copy}``) whose work comes back as a merge,
and the node killed under a running command.

Skipped, with one reason, when ray is not installed (``pip install -e '.[ray]'``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import uvicorn
from playwright.sync_api import expect

from dispatch.hub.api.app import create_app
from dispatch.hub.errors import ConfigError
from dispatch.hub.events import ToolCalled, ToolHostLost, ToolHostStarted, ToolReturned
from dispatch.hub.llm.scripted import RecordedRequest, Reply, ScriptedModel
from dispatch.hub.service.hub import Hub
from tests.agent_helpers import call, until
from tests.hub_helpers import MODEL, dirs
from tests.test_changes import git
from tests.web_ui_helpers import chromium, open_url

ray: Any = pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]'")
cluster_utils: Any = pytest.importorskip("ray.cluster_utils")

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(150)]

LEAF = "leaf"
"""The custom resource only the second node has: the leaf template's tool hosts need one."""
HEAD = "head"
"""The head node's own resource: the top agent's tool host needs one (:data:`ON_HEAD`), so that it stays there."""
ON_HEAD = "placement:\n  resources: {head: 1}\n"
"""The built-in dispatch template, its tool hosts kept on the head node (the file overrides that field alone)."""


@pytest.fixture(scope="module", autouse=True)
def _no_token_auth() -> Iterator[None]:
    """Ray's token authentication off for these clusters of one machine: each test has its own
    HOME (where Ray keeps its token), but the process is one Ray driver after another."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")
        yield


def ray_processes() -> set[int]:
    """The pids of Ray's own processes on this machine (raylet, GCS, workers, ...)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    names = ("raylet", "gcs_server", "ray::", "default_worker.py", "ray/_private", "ray/dashboard", "plasma_store")
    return {int(line.split(None, 1)[0]) for line in out.splitlines() if any(n in line for n in names)}


def configure(root: Path, execution: str, templates: dict[str, str] | None = None) -> None:
    (root / ".dispatch" / "templates").mkdir(parents=True)
    (root / ".dispatch" / "config.yaml").write_text(f"execution:\n{execution}")
    for name, text in (templates or {}).items():
        (root / ".dispatch" / "templates" / f"{name}.yaml").write_text(text)


def script_tree(model: ScriptedModel, leaves: int, *, template: str | None = None, isolation: bool = False) -> None:
    """A top agent summoning ``leaves`` leaves, each writing ``out/leaf-N.txt`` and running a
    command, then waiting for them all."""
    extra: dict[str, Any] = {"template": template} if template else {}
    extra |= {"isolation": "worktree"} if isolation else {}
    summons = [
        call("summon", task=f"[leaf-{n}] write", name=f"leaf-{n}", scope=[f"out/leaf-{n}.txt"], **extra)
        for n in range(leaves)
    ]
    waits = [Reply(tool_calls=[call("wait")]) for _ in range(leaves)]
    model.script("[top]", [Reply(tool_calls=summons), *waits, Reply(text="all written")])
    for n in range(leaves):
        write = call("write_file", path=f"out/leaf-{n}.txt", content=f"leaf {n}\n")
        run = call("run", command=f"cat out/leaf-{n}.txt")
        model.script(f"[leaf-{n}]", [Reply(tool_calls=[write]), Reply(tool_calls=[run]), Reply(text=f"leaf {n} done")])


async def test_a_tree_of_four_runs_on_the_hubs_own_ray_and_no_ray_process_outlives_the_hub(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    configure(root, "  engine: ray\n  resources: {CPU: 2}\n")
    before = ray_processes()
    model = ScriptedModel()
    script_tree(model, 3)
    with model, anyio.fail_after(120):  # a hang fails the test, and the hub still stops Ray
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            assert ray.is_initialized()
            node = ray.get_runtime_context().get_node_id()
            async with hub.tree.events.subscribe() as events:
                top = await hub.start("[top] write three files", model=MODEL)
                assert (await hub.wait_finished(top.id)).state == "done"
                views = await hub.agents()
                seen = [events.receive_nowait() for _ in range(events.statistics().current_buffer_used)]
            started = [e for e in seen if isinstance(e.data, ToolHostStarted)]
    assert len(views) == 4
    assert sorted(e.agent_id for e in started) == sorted(v.id for v in views)  # one tool host each, announced
    assert all(isinstance(e.data, ToolHostStarted) and e.data.node_id == node for e in started)
    for view in views:
        assert view.state == "done", view
        assert view.placement.engine == "ray" and view.placement.node_id == node, view
        assert view.placement.address
    for n in range(3):
        assert (root / "out" / f"leaf-{n}.txt").read_text() == f"leaf {n}\n"
    assert not ray.is_initialized()
    for _ in range(50):  # Ray's processes take a moment to exit after shutdown
        if ray_processes() <= before:
            break
        await anyio.sleep(0.2)
    assert ray_processes() <= before, "a Ray process outlived the hub"


async def test_without_ray_installed_the_hub_refuses_engine_ray_saying_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, data = dirs(tmp_path)
    configure(root, "  engine: ray\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra sees
    with pytest.raises(ConfigError) as raised:
        async with Hub.open(root, data, model=ScriptedModel(), default_model=MODEL):
            pass
    assert str(raised.value) == (
        "execution.engine: ray needs the ray package, not installed here: pip install 'dispatch-harness[ray]'"
    )


LOCAL_RUN = """
import sys, anyio
from pathlib import Path
from dispatch.hub.llm.scripted import Reply, ScriptedModel, ToolCall
from dispatch.hub.service.hub import Hub

async def main() -> None:
    model = ScriptedModel()
    write = ToolCall("write_file", {"path": "a.txt", "content": "a"})
    model.script("[w]", [Reply(tool_calls=[write]), Reply(text="ok")])
    async with Hub.open(Path(sys.argv[1]), Path(sys.argv[2]), model=model, default_model="openai/scripted") as hub:
        top = await hub.start("[w] write", model="openai/scripted")
        print((await hub.wait_finished(top.id)).state, (await hub.agents())[0].placement.engine, "ray" in sys.modules)

anyio.run(main)
"""


def test_a_hub_with_the_local_engine_never_loads_ray(tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    done = subprocess.run([sys.executable, "-c", LOCAL_RUN, str(root), str(data)], capture_output=True, text=True)
    assert done.stdout.split() == ["done", "local", "False"], done.stderr[-2000:]
    assert (root / "a.txt").read_text() == "a"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A two-node Ray cluster on this machine: a head (1 CPU) and a node with the ``leaf`` resource."""
    head = {"num_cpus": 1, "include_dashboard": False, "resources": {HEAD: 100}}
    made = cluster_utils.Cluster(initialize_head=True, head_node_args=head)
    made.add_node(num_cpus=1, resources={LEAF: 4})
    made.wait_for_nodes()
    try:
        yield made
    finally:
        made.shutdown()


def test_doctor_lists_the_clusters_nodes_with_their_cpus_and_resources(tmp_path: Path, cluster: Any) -> None:
    root, _ = dirs(tmp_path)
    configure(root, f"  engine: ray\n  address: {cluster.address}\n")
    done = subprocess.run(
        [sys.executable, "-m", "dispatch.hub.cli", "doctor", "--root", str(root)], capture_output=True, text=True
    )
    section = done.stdout[done.stdout.index("Ray (execution.engine: ray") :].split("\n\n")[0]
    assert f"{cluster.address}: 2 nodes alive, 2 CPUs" in section, done.stdout
    assert f"node {leaf_node(cluster).node_id[:12]}" in section and "resources: leaf 4" in section
    assert f"node {cluster.head_node.node_id[:12]}" in section


def leaf_node(cluster: Any) -> Any:
    return next(node for node in cluster.list_all_nodes() if node is not cluster.head_node)


LEAF_TEMPLATE = "name: leaf\ntools: {fs: true, shell: true}\nplacement:\n  resources: {leaf: 1}\n"


async def test_leaves_are_placed_on_the_second_node_by_a_resource_and_their_changes_merge_back(
    tmp_path: Path, cluster: Any
) -> None:
    root, data = dirs(tmp_path)
    git(root, "init", "-q")
    (root / "README.md").write_text("hello\n")
    git(root, "add", "README.md")
    git(root, "commit", "-qm", "start")
    configure(root, f"  engine: ray\n  address: {cluster.address}\n", {"leaf": LEAF_TEMPLATE})
    model = ScriptedModel()
    script_tree(model, 2, template="leaf", isolation=True)
    with model, anyio.fail_after(120):  # a hang fails the test, and the hub still stops Ray
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            top = await hub.start("[top] write two files", model=MODEL)
            assert (await hub.wait_finished(top.id)).state == "done"
            views = {v.name: v for v in await hub.agents()}
            diff = {f.path for f in (await hub.changes(top.id)).files}
    second = leaf_node(cluster).node_id
    for n in range(2):
        assert views[f"leaf-{n}"].placement.node_id == second, views[f"leaf-{n}"]
        assert (root / "out" / f"leaf-{n}.txt").read_text() == f"leaf {n}\n"
    assert views["dispatch"].placement.node_id in {node.node_id for node in cluster.list_all_nodes()}
    assert diff == {"out/leaf-0.txt", "out/leaf-1.txt"}
    assert not ray.is_initialized()  # the hub left the cluster it joined; the cluster goes on
    assert ray_processes()


async def test_a_node_lost_mid_command_interrupts_the_agent_and_resume_finishes_it_on_another(
    tmp_path: Path, cluster: Any
) -> None:
    root, data = dirs(tmp_path)
    configure(root, f"  engine: ray\n  address: {cluster.address}\n", {"leaf": LEAF_TEMPLATE, "dispatch": ON_HEAD})
    model = ScriptedModel()
    summon = call("summon", task="[slow] build", name="slow", template="leaf", scope=["out"])
    model.script("[top]", [Reply(tool_calls=[summon]), Reply(tool_calls=[call("wait")]), Reply(text="built")])
    slow = call("run", command="mkdir -p out && echo started > out/started && sleep 60")
    write = call("write_file", path="out/built.txt", content="built\n")
    model.script("[slow]", [Reply(tool_calls=[slow]), Reply(tool_calls=[write]), Reply(text="built it")])
    with model, anyio.fail_after(120):  # a hang fails the test, and the hub still stops Ray
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            async with hub.tree.events.subscribe() as events:
                top = await hub.start("[top] build", model=MODEL)
                await until(lambda: (root / "out" / "started").exists(), timeout_s=60)
                slow_id = next(a.id for a in hub.tree.agents.values() if a.spec.name == "slow")
                doomed = hub.tree.placement_of(slow_id).node_id
                cluster.remove_node(leaf_node(cluster))
                await until(lambda: hub.tree.get(slow_id).state.value == "interrupted", timeout_s=60)
                seen = [events.receive_nowait() for _ in range(events.statistics().current_buffer_used)]
            [lost] = [e for e in seen if isinstance(e.data, ToolHostLost)]
            assert lost.agent_id == slow_id and isinstance(lost.data, ToolHostLost) and lost.data.node_id == doomed
            [called] = [e.data for e in seen if isinstance(e.data, ToolCalled) and e.data.name == "run"]
            [ended] = [e.data for e in seen if isinstance(e.data, ToolReturned) and e.data.call_id == called.call_id]
            assert ended.is_error and doomed in ended.text and "lost" in ended.text  # the lost call ends, saying why
            agent = hub.tree.get(slow_id)
            assert "tool host" in agent.reason and "lost" in agent.reason and doomed in agent.reason
            assert "resume" in agent.reason
            cluster.add_node(num_cpus=1, resources={LEAF: 4})
            cluster.wait_for_nodes()
            await hub.resume(slow_id)
            await until(lambda: hub.tree.get(slow_id).state.value == "done", timeout_s=60)
            assert hub.tree.placement_of(slow_id).node_id != doomed
            assert (await hub.wait_finished(top.id)).state == "done"  # its wait saw the resumed child's report
    assert (root / "out" / "built.txt").read_text() == "built\n"


COPY_TEMPLATE = "name: leaf\ntools: {fs: true, shell: true}\nplacement:\n  resources: {leaf: 1}\n  files: copy\n"


async def test_leaves_forced_to_copy_work_on_the_node_and_their_work_comes_back_as_a_merge(
    tmp_path: Path, cluster: Any
) -> None:
    """Two leaves in copies of the project on the second node: one's work merges into the project
    (its changes shown as its own, and rewound), the other's conflicts with an edit made meanwhile,
    as a worktree child's would. The project is untouched until they end; the placements outlive
    the hub and show in the agent's panel of the web UI."""
    root, data = dirs(tmp_path)
    git(root, "init", "-q")
    (root / "README.md").write_text("hello\n")
    (root / "notes.txt").write_text("first\n")
    git(root, "add", "README.md")
    git(root, "commit", "-qm", "start")  # notes.txt is untracked: it travels all the same
    configure(root, f"  engine: ray\n  address: {cluster.address}\n", {"leaf": COPY_TEMPLATE, "dispatch": ON_HEAD})
    model = ScriptedModel()
    go = anyio.Event()

    async def held(request: RecordedRequest) -> Reply:
        await go.wait()
        return Reply(text="done")

    summons = [
        call("summon", task="[writer] write", name="writer", template="leaf", scope=["out", "README.md"]),
        call("summon", task="[editor] edit", name="editor", template="leaf", scope=["notes.txt"]),
    ]
    waits = [Reply(tool_calls=[call("wait")]) for _ in range(2)]
    model.script("[top]", [Reply(tool_calls=summons), *waits, Reply(text="both back")])
    write = call("write_file", path="out/new.txt", content="new\n")
    append = call("run", command="echo more >> README.md && echo shell > out/shell.txt")  # out: an empty folder
    model.script("[writer]", [Reply(tool_calls=[append]), Reply(tool_calls=[write]), held])
    edit = call("edit_file", path="notes.txt", old="first", new="the editor's")
    model.script("[editor]", [Reply(tool_calls=[edit]), held])
    with model, anyio.fail_after(120):
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            top = await hub.start("[top] write and edit", model=MODEL)
            await until(lambda: len(model.requests_for("[writer]")) == 3, timeout_s=60)
            await until(lambda: len(model.requests_for("[editor]")) == 2, timeout_s=60)
            ids = {a.spec.name: a.id for a in hub.tree.agents.values()}
            assert (
                not (root / "out" / "new.txt").exists() and (root / "README.md").read_text() == "hello\n"
            )  # untouched
            assert (root / "notes.txt").read_text() == "first\n"
            (root / "notes.txt").write_text("the parent's\n")  # meanwhile, in the parent's tree
            go.set()
            assert (await hub.wait_finished(top.id)).state == "done"
            views = {v.name: v for v in await hub.agents()}
            writer, editor = ids["writer"], ids["editor"]
            changes = await hub.changes(writer)
            merges = dict(hub.tree.merges)
    second = leaf_node(cluster).node_id
    for name in ("writer", "editor"):
        assert views[name].placement.node_id == second and views[name].placement.files == "copy", views[name]
    assert views["dispatch"].placement.files == "shared"  # the head node sees the hub's files
    assert (root / "out" / "new.txt").read_text() == "new\n"
    assert (root / "README.md").read_text() == "hello\nmore\n"
    assert (root / "out" / "shell.txt").read_text() == "shell\n"
    assert {f.path for f in changes.files} == {"out/new.txt", "out/shell.txt", "README.md"} and "+more" in changes.diff
    assert merges[writer].outcome == "merged"
    assert merges[editor].outcome == "conflict" and (root / "notes.txt").read_text() == "the parent's\n"
    [conflict] = merges[editor].conflicts
    assert (conflict.path, conflict.yours, conflict.child) == ("notes.txt", "the parent's\n", "the editor's\n")
    assert not git(root, "for-each-ref", "refs/dispatch").strip()  # no ref of ours is left in the repository
    async with Hub.open(root, data, model=ScriptedModel(), default_model=MODEL) as hub:  # a restart
        stored = hub.view(writer).placement
        shown = await agent_panel(hub, "agent writer, done")
        await hub.rewind(writer)  # what its merge wrote is put back
        assert not (root / "out" / "new.txt").exists() and (root / "README.md").read_text() == "hello\n"
    assert (stored.engine, stored.node_id, stored.files) == ("ray", second, "copy") and stored.address
    assert f"tools on Ray node {second[:12]} ({stored.address}), in a copy of the files" in shown


async def agent_panel(hub: Hub, button: str) -> str:
    """The text of an agent's panel in the web UI (headless Chromium), the agent opened by its button."""
    token = "placement-token"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(hub, token=token), log_level="warning", lifespan="off"))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def read() -> str:
        with chromium() as browser:
            page, errors = open_url(browser, url, token)
            page.get_by_role("button", name=button).click()
            expect(page.locator("#agent-head")).to_contain_text("tools on Ray node", timeout=10_000)
            assert errors == []
            return page.locator("#agent-head").text_content() or ""

    with sock:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: server.serve(sockets=[sock]))
            while not server.started:
                await anyio.sleep(0.01)
            try:
                return await anyio.to_thread.run_sync(read)
            finally:
                server.should_exit = True


async def test_copying_a_project_that_is_not_in_git_fails_the_agent_saying_copying_needs_git(
    tmp_path: Path, cluster: Any
) -> None:
    root, data = dirs(tmp_path)
    on_head_copying = "placement:\n  resources: {head: 1}\n  files: copy\n"
    configure(root, f"  engine: ray\n  address: {cluster.address}\n", {"dispatch": on_head_copying})
    model = ScriptedModel()
    model.script("[w]", [Reply(tool_calls=[call("write_file", path="a.txt", content="a")]), Reply(text="ok")])
    with anyio.fail_after(60):
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            top = await hub.start("[w] write", model=MODEL)
            failed = await hub.wait_finished(top.id)
    assert failed.state == "failed"
    assert failed.error == (
        "the agent's tool host could not be placed: placement.files: copying the project's files to a Ray node "
        f"needs git, and {root} is not in a git repository (git init it, or use nodes that share the files)"
    )
    assert not (root / "a.txt").exists()


async def test_an_outside_path_asked_for_on_a_node_goes_to_the_user_and_the_answer_comes_back(
    tmp_path: Path, cluster: Any
) -> None:
    root, data = dirs(tmp_path)
    outside = tmp_path / "elsewhere" / "notes.txt"
    outside.parent.mkdir()
    outside.write_text("the notes outside\n")
    configure(root, f"  engine: ray\n  address: {cluster.address}\n", {"leaf": LEAF_TEMPLATE})
    model = ScriptedModel()
    summon = call("summon", task="[reader] read", name="reader", template="leaf", scope=["out"])
    model.script("[top]", [Reply(tool_calls=[summon]), Reply(tool_calls=[call("wait")]), Reply(text="read")])
    read = call("read_file", path=str(outside))
    model.script("[reader]", [Reply(tool_calls=[read]), Reply(text="read it")])
    with model, anyio.fail_after(120):
        async with Hub.open(root, data, model=model, default_model=MODEL) as hub:
            top = await hub.start("[top] read", model=MODEL)
            pending: list[Any] = []

            async def asked() -> bool:
                pending[:] = await hub.approvals()
                return bool(pending)

            while not await asked():
                await anyio.sleep(0.1)
            [approval] = pending
            reader = next(a for a in hub.tree.agents.values() if a.spec.name == "reader")
            assert (approval.path, approval.operation, approval.agent_id) == (str(outside), "read", reader.id)
            assert hub.tree.placement_of(reader.id).node_id == leaf_node(cluster).node_id
            await hub.answer_approval(approval.id, "approve", "once")
            assert (await hub.wait_finished(top.id)).state == "done"
            detail = reader.transcript
    results = [m["content"] for m in detail if m.get("role") == "tool"]
    assert any("the notes outside" in str(r) for r in results), results


def test_the_placement_benchmark_prints_its_figures() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.ray_placement", "--quick"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for figure in ("local wall", "local hub CPU", "ray wall", "ray hub CPU", "ray node "):
        assert figure in done.stdout, f"{figure!r} missing from:\n{done.stdout}"
