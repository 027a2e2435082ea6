"""The Ray engine (``execution.engine: ray``): Ray's lifetime in the hub, and tool hosts placed as actors.

:meth:`RayEngine.start` starts a local Ray instance (no dashboard, the configured CPUs and custom
resources) or joins the cluster at ``execution.address``; :meth:`RayEngine.stop` stops the local
instance, or leaves the cluster. :meth:`RayEngine.place` starts an agent's tool host
(:class:`~dispatch.hub.mounts.hosts.ToolHost`) as an actor, steered by the agent's ``placement``
(resources, node labels). :func:`cluster_nodes` lists the nodes for ``dispatch doctor``. Ray is
imported here only, and only when this engine is used: a hub with ``engine: local`` never loads it.

Which files a tool host works in is found when it is placed: the hub writes a probe file holding a
random token in its data directory (:data:`PROBE_FILE`), and a host that reads that token at that
path shares the hub's files and works in them in place. One that does not (or any, with the
template's ``placement: {files: copy}``) gets a copy: the files packed on the hub, put in Ray's
object store, unpacked on the node; when its agent ends, :meth:`RayEngine.release` has its work
packed back and added to the project's repository, kept for the tree to merge
(:meth:`RayEngine.take_returned`).
"""

from __future__ import annotations

import importlib
import logging
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread

from dispatch.hub.config.execution import RAY_INSTALL, ExecutionConfig
from dispatch.hub.errors import ConfigError, ToolServerError
from dispatch.hub.mounts.hosts import Announce, FileTravel, Returned, ToolHost, sees_probe
from dispatch.hub.mounts.plan import MountPlan
from dispatch.hub.views import PlacementView
from dispatch.servers.lsp.settings import LspSettings


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ConfigError(f"execution.engine: ray needs the ray package, not installed here: {RAY_INSTALL}") from None


log = logging.getLogger(__name__)

PROBE_FILE = "ray-probe"
"""The file in the hub's data directory a tool host must see, with its token, to work in the hub's files."""

RETURN_TIMEOUT_S = 300.0
"""How long an agent's work in a copy may take to come back (packed on its node, added on the hub)."""

PLACE_TIMEOUT_S = 60.0
"""How long a tool host may wait for a node that can take it before the agent fails, saying what it needs."""


class _RayToolHost(ToolHost):
    """The tool host as Ray runs it: it knows its node."""

    def where(self, probe: str, token: str) -> tuple[str, str, bool]:
        """Its node's id and address, and whether it sees the hub's probe file (shares its files)."""
        ray = importlib.import_module("ray")
        shared = bool(probe) and sees_probe(probe, token)
        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), shared


@dataclass(frozen=True)
class _Copy:
    """A tool host working in a copy of its agent's project."""

    agent_id: str
    root: Path
    base: str


@dataclass(frozen=True)
class NodeInfo:
    """One node of the cluster, as ``dispatch doctor`` shows it."""

    node_id: str
    address: str
    alive: bool
    cpus: float
    resources: dict[str, float] = field(default_factory=dict[str, float])
    labels: dict[str, str] = field(default_factory=dict[str, str])


def cluster_nodes(ray: Any) -> list[NodeInfo]:
    """The nodes of the cluster ``ray`` is connected to."""
    nodes: list[NodeInfo] = []
    for node in ray.nodes():
        resources = {str(k): float(v) for k, v in dict(node.get("Resources") or {}).items()}
        own = {k: v for k, v in resources.items() if k not in ("CPU", "memory", "object_store_memory", "GPU")}
        own = {k: v for k, v in own.items() if not k.startswith("node:")}
        labels = {str(k): str(v) for k, v in dict(node.get("Labels") or {}).items() if not str(k).startswith("ray.io/")}
        nodes.append(
            NodeInfo(
                str(node["NodeID"]), str(node["NodeManagerAddress"]), bool(node["Alive"]), resources.get("CPU", 0.0),
                own, labels,
            )
        )  # fmt: skip
    return nodes


class RayEngine:
    """The hub's connection to Ray, from :meth:`start` to :meth:`stop`."""

    def __init__(self, config: ExecutionConfig, ray: Any, *, owned: bool) -> None:
        self.config = config
        self._ray = ray
        self.owned = owned
        """Whether this hub started the Ray instance (and so stops it), rather than joining a cluster."""
        self._remote: Any = ray.remote(num_cpus=0, max_restarts=0)(_RayToolHost)
        self._watchers: list[Announce] = []
        self._nodes: dict[int, str] = {}
        self.travel: FileTravel | None = None
        """How the project's files travel to a node that does not share them (None: they do not, and
        every node is taken to share them)."""
        self._probe = ("", "")
        self._copies: dict[int, _Copy] = {}
        self._returned: dict[str, Returned] = {}
        self.cpu_by_node: dict[str, float] = {}
        """CPU seconds of the tool hosts stopped so far (their commands included), by node id."""

    @classmethod
    def start(cls, config: ExecutionConfig) -> RayEngine:
        """Start a local Ray instance, or join ``config.address`` (blocking: call it in a thread)."""
        ray = import_ray()
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
            "ignore_reinit_error": False,
        }
        if config.runtime_env:
            options["runtime_env"] = config.runtime_env
        if config.address is None:
            resources = dict(config.resources)
            cpus = resources.pop("CPU", None)
            options |= {"num_cpus": None if cpus is None else int(cpus), "resources": resources or None}
        else:
            options["address"] = config.address
        if ray.is_initialized():  # this process is already a Ray driver (a test's cluster): use it
            return cls(config, ray, owned=False)
        try:
            ray.init(**options)
        except Exception as error:
            where = config.address or "a local instance"
            raise ConfigError(f"execution: Ray could not start ({where}): {str(error).splitlines()[0]}") from None
        return cls(config, ray, owned=True) if config.address is None else cls(config, ray, owned=False)

    def carry_files(self, home: Path, travel: FileTravel) -> None:
        """Copy the project's files with ``travel`` for tool hosts that do not see the probe file
        this writes in ``home`` (the hub's data directory) with a fresh token (blocking)."""
        token = secrets.token_hex(16)
        probe = home / PROBE_FILE
        probe.write_text(token)
        probe.chmod(0o600)
        self._probe = (str(probe), token)
        self.travel = travel

    def stop(self) -> None:
        """Stop the local instance this hub started, or disconnect from the cluster it joined."""
        if self._probe[0]:
            Path(self._probe[0]).unlink(missing_ok=True)
        if self.owned or self.config.address is not None:
            self._ray.shutdown()

    def nodes(self) -> list[NodeInfo]:
        return cluster_nodes(self._ray)

    async def place(self, plan: MountPlan, lsp: LspSettings | None) -> tuple[Any, PlacementView]:
        placement = plan.placement
        options: dict[str, Any] = {}
        if placement is not None:
            resources = dict(placement.resources)
            if "CPU" in resources:
                options["num_cpus"] = resources.pop("CPU")
            if resources:
                options["resources"] = resources
            if placement.labels:
                options["label_selector"] = dict(placement.labels)
        actor = self._remote.options(**options).remote(plan, lsp)
        node_id, address, shared = "", "", False
        with anyio.move_on_after(PLACE_TIMEOUT_S) as waiting:
            node_id, address, shared = await actor.where.remote(*self._probe)
        if waiting.cancelled_caught:
            await self._kill(actor)
            wanted = ", ".join(f"{k} {v:g}" for k, v in placement.resources.items()) if placement else "nothing"
            labels = f" and labels {placement.labels}" if placement and placement.labels else ""
            raise ToolServerError(
                f"no Ray node took it within {PLACE_TIMEOUT_S:g} s (it needs resources: {wanted}{labels}); "
                "dispatch doctor lists the nodes and what they have"
            )
        self._nodes[id(actor)] = node_id
        try:
            files = await self._files(actor, plan, node_id, shared)
            await actor.start.remote()
        except BaseException:
            with anyio.CancelScope(shield=True):
                self._nodes.pop(id(actor), None)
                self._copies.pop(id(actor), None)
                await self._kill(actor)
            raise
        return actor, PlacementView(engine="ray", node_id=node_id, address=address, files=files)

    async def _files(self, actor: Any, plan: MountPlan, node_id: str, shared: bool) -> Literal["shared", "copy"]:
        """Which files the host works in: the hub's, or (unpacked on its node) a copy of them."""
        wanted = plan.placement.files if plan.placement is not None else "auto"
        travel = self.travel
        if travel is None or wanted == "shared" or (wanted == "auto" and (shared or not self._probe[0])):
            if wanted == "shared" and self._probe[0] and not shared:
                raise ToolServerError(
                    f"placement.files: shared, but Ray node {node_id} does not see the hub's files (its data "
                    f"directory is not at the same path there); use files: auto or copy"
                )
            return "shared"
        packed = await anyio.to_thread.run_sync(travel.pack, plan.root)
        scopes = tuple(path for path in plan.grants.write if (plan.root / path).is_dir())  # made before it starts
        packed = replace(packed, folders=scopes)
        ray = self._ray
        parcel = await anyio.to_thread.run_sync(lambda: ray.put(packed))
        await actor.checkout.remote(travel, parcel)
        self._copies[id(actor)] = _Copy(plan.agent_id, plan.root, packed.base)
        return "copy"

    async def _kill(self, actor: Any) -> None:
        ray = self._ray
        await anyio.to_thread.run_sync(lambda: ray.kill(actor, no_restart=True))

    async def release(self, actor: Any) -> None:
        node = self._nodes.pop(id(actor), "")
        copy = self._copies.pop(id(actor), None)
        if copy is not None:
            self._returned[copy.agent_id] = await self._bring_back(actor, copy)
        try:
            with anyio.move_on_after(5):
                await actor.stop.remote()
                spent: float = await actor.cpu_seconds.remote()
                self.cpu_by_node[node] = self.cpu_by_node.get(node, 0.0) + spent
        except Exception:  # already gone
            pass
        await self._kill(actor)

    async def _bring_back(self, actor: Any, copy: _Copy) -> Returned:
        """The agent's work in its host's copy, packed there and added to the project's repository."""
        travel = self.travel
        assert travel is not None
        try:
            with anyio.fail_after(RETURN_TIMEOUT_S):
                bundle: bytes = await actor.pack_back.remote()
                child = await anyio.to_thread.run_sync(travel.receive, copy.root, bundle)
        except Exception as error:  # its node stopped, git failed, or it took too long: the work is lost
            text = str(error).strip()
            detail = text.splitlines()[0][:300] if text else f"nothing came back within {RETURN_TIMEOUT_S:g} s"
            log.warning("the work of agent %s did not come back from its Ray node: %s", copy.agent_id, detail)
            return Returned(copy.root, copy.base, None, f"its work did not come back from its Ray node: {detail}")
        return Returned(copy.root, copy.base, child)

    def take_returned(self, agent_id: str) -> Returned | None:
        return self._returned.pop(agent_id, None)

    def watch(self, watcher: Announce) -> None:
        self._watchers.append(watcher)

    def announce(self, agent_id: str, placement: PlacementView, lost: str | None) -> None:
        for watcher in self._watchers:
            watcher(agent_id, placement, lost)
