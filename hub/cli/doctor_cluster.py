"""``dispatch doctor``'s Ray section (``execution.engine: ray``): whether Ray is installed, and the
cluster the hub would use: the local instance it would start (its CPUs and resources), or the nodes
of the cluster at ``execution.address`` (each one's address, CPUs, custom resources and labels),
read by joining it for a moment. Nothing is started, and with ``engine: local`` Ray is not loaded.
"""

from __future__ import annotations

import os

from dispatch.hub.cli.doctor import Finding
from dispatch.hub.config.execution import ExecutionConfig
from dispatch.hub.errors import ConfigError

__all__ = ["check_cluster"]


def _resources(resources: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:g}" for name, value in sorted(resources.items())) or "none"


def check_cluster(config: ExecutionConfig) -> list[Finding] | None:
    """The findings of the Ray section; None with ``engine: local`` (the section is left out)."""
    if config.engine == "local":
        return None
    from dispatch.hub.mounts.cluster import cluster_nodes, import_ray

    try:
        ray = import_ray()
    except ConfigError as error:
        return [Finding("ray", str(error), "missing")]
    findings = [Finding("ray", f"Ray {ray.__version__} installed")]
    if config.address is None:
        custom = dict(config.resources)
        cpus = custom.pop("CPU", None)
        shown = f"{cpus:g} CPUs (execution.resources)" if cpus is not None else f"{os.cpu_count()} CPUs (the cores)"
        text = f"a local Ray instance starts with the hub and stops with it: {shown}; custom resources: "
        return [*findings, Finding("cluster", text + _resources(custom))]
    try:
        ray.init(address=config.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as error:
        text = f"execution.address {config.address}: cannot join: {str(error).strip().splitlines()[0][:200]}"
        return [*findings, Finding("cluster", text, "failed")]
    try:
        nodes = cluster_nodes(ray)
    finally:
        ray.shutdown()
    alive = [n for n in nodes if n.alive]
    findings.append(
        Finding("cluster", f"{config.address}: {len(alive)} nodes alive, {sum(n.cpus for n in alive):g} CPUs")
    )
    for node in alive:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(node.labels.items())) or "none"
        text = f"{node.address}: {node.cpus:g} CPUs; resources: {_resources(node.resources)}; labels: {labels}"
        findings.append(Finding(f"node {node.node_id[:12]}", text))
    return findings
