"""The Ray engine (``execution.engine: ray``): Ray's lifetime in the hub, and tool hosts placed as actors.

:meth:`RayEngine.start` starts a local Ray instance (no dashboard, the configured CPUs and custom
resources) or joins the cluster at ``execution.address``; :meth:`RayEngine.stop` stops the local
instance, or leaves the cluster. :meth:`RayEngine.place` starts an agent's tool host
(:class:`~dispatch.hub.mounts.hosts.ToolHost`) as an actor, steered by the agent's ``placement``
(resources, node labels). :func:`cluster_nodes` lists the nodes for ``dispatch doctor``. Ray is
imported here only, and only when this engine is used: a hub with ``engine: local`` never loads it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from dispatch.hub.config.execution import RAY_INSTALL, ExecutionConfig
from dispatch.hub.errors import ConfigError, ToolServerError
from dispatch.hub.mounts.hosts import Announce, ToolHost
from dispatch.hub.mounts.plan import MountPlan
from dispatch.hub.views import PlacementView
from dispatch.servers.lsp.settings import LspSettings


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise ConfigError(f"execution.engine: ray needs the ray package, not installed here: {RAY_INSTALL}") from None


PLACE_TIMEOUT_S = 60.0
"""How long a tool host may wait for a node that can take it before the agent fails, saying what it needs."""


class _RayToolHost(ToolHost):
    """The tool host as Ray runs it: it knows its node."""

    def where(self) -> tuple[str, str]:
        ray = importlib.import_module("ray")
        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()


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

    def stop(self) -> None:
        """Stop the local instance this hub started, or disconnect from the cluster it joined."""
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
        node_id, address = "", ""
        with anyio.move_on_after(PLACE_TIMEOUT_S) as waiting:
            node_id, address = await actor.where.remote()
        if waiting.cancelled_caught:
            await anyio.to_thread.run_sync(lambda: self._ray.kill(actor, no_restart=True))
            wanted = ", ".join(f"{k} {v:g}" for k, v in placement.resources.items()) if placement else "nothing"
            labels = f" and labels {placement.labels}" if placement and placement.labels else ""
            raise ToolServerError(
                f"no Ray node took it within {PLACE_TIMEOUT_S:g} s (it needs resources: {wanted}{labels}); "
                "dispatch doctor lists the nodes and what they have"
            )
        self._nodes[id(actor)] = node_id
        await actor.start.remote()
        return actor, PlacementView(engine="ray", node_id=node_id, address=address)

    async def release(self, actor: Any) -> None:
        ray = self._ray
        node = self._nodes.pop(id(actor), "")
        try:
            with anyio.move_on_after(5):
                await actor.stop.remote()
                spent: float = await actor.cpu_seconds.remote()
                self.cpu_by_node[node] = self.cpu_by_node.get(node, 0.0) + spent
        except Exception:  # already gone
            pass
        await anyio.to_thread.run_sync(lambda: ray.kill(actor, no_restart=True))

    def watch(self, watcher: Announce) -> None:
        self._watchers.append(watcher)

    def announce(self, agent_id: str, placement: PlacementView, lost: str | None) -> None:
        for watcher in self._watchers:
            watcher(agent_id, placement, lost)
