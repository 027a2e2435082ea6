"""The config's ``execution`` section and a template's ``placement``: where agents' tool servers run.

``engine: local`` (the default) runs every agent's tool servers in the hub's process, as always.
``engine: ray`` runs each agent's ``fs``, ``shell`` and ``lsp`` servers in a Ray actor (its tool
host) on a node Ray chooses: with no ``address`` the hub starts a local Ray instance for its own
lifetime (``resources`` are its CPUs and custom resources; no dashboard); with one (``auto`` or
``HOST:PORT``) it joins that cluster. A template's ``placement`` steers its agents' tool hosts:
the Ray resources they need, the node labels they must match, and which files they work in
(``files``: the project's own where the node shares them, else a copy of their own).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RAY_INSTALL = "pip install 'dispatch-harness[ray]'"
"""How to install the optional Ray dependency (said by every error that needs it)."""


class ExecutionConfig(BaseModel):
    """The config's ``execution`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["local", "ray"] = Field(
        default="local",
        description="local: tool servers run in the hub's process; ray: each agent's fs, shell and lsp servers run "
        f"in a Ray actor on a node Ray chooses (needs the ray extra: {RAY_INSTALL})",
    )
    address: str | None = Field(
        default=None,
        description="the Ray cluster to join (auto, or HOST:PORT); none: the hub starts a local Ray instance for "
        "its lifetime and stops it with the hub",
    )
    resources: dict[str, float] = Field(
        default_factory=dict[str, float],
        description="the local Ray instance's resources: CPU (default: the machine's cores) and any custom ones; "
        "ignored when joining a cluster",
    )
    runtime_env: dict[str, Any] = Field(
        default_factory=dict[str, Any],
        description="Ray's runtime_env for the tool hosts (env_vars, pip, working_dir, ...), as Ray takes it",
    )


class Placement(BaseModel):
    """A template's ``placement``: what its agents' tool hosts need of a Ray node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resources: dict[str, float] = Field(
        default_factory=dict[str, float],
        description="Ray resources each tool host needs (CPU, or a custom one such as build: 1); Ray picks a node "
        "that has them",
    )
    labels: dict[str, str] = Field(
        default_factory=dict[str, str], description="node labels the tool host's node must have (Ray label selector)"
    )
    files: Literal["auto", "shared", "copy"] = Field(
        default="auto",
        description="auto: the tool host works in the project's files when its node sees them (at the same "
        "path), else in a copy of them (the project must be a git repository), merged back when the agent ends "
        "as an isolated child's work is; shared: always in the project's files (refused on a node that does "
        "not see them); copy: always in a copy, even on a node that shares them",
    )
