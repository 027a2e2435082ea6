"""The projects a hub serves: each a root with its own catalog (config, templates, skills) and its
own outside MCP servers. Every agent works in one (its spec's ``root``; a child in its parent's).

The hub's own project (where it was started) is always open; another opens the first time work
is started there (:meth:`AgentTree.open_project <dispatch.hub.agents.tree.AgentTree.open_project>`),
its config read and checked then, a broken one refused with the file and field at fault. What
stays per user, across projects: the model keys, their budgets and the usage ledger, the hub-wide
limits, the language-server settings (all from the hub's own project's config).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.mounts.outside import OutsideServers

__all__ = ["Project"]


@dataclass
class Project:
    """One project root, what its config files say, and its outside servers."""

    root: Path
    """Absolute, symlinks resolved."""
    catalog: Catalog
    """Replaced when its config files change (the hub's config watch)."""
    outside: OutsideServers
