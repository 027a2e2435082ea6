"""What to mount for one agent (:class:`MountPlan`), and how each server is reached.

Which servers: the built-in ones the grants mount (the table in :mod:`dispatch.hub.policy.servers`,
each built here by its name): ``inbox`` and ``fs`` always (``fs`` read-only unless the agent has
a write scope), ``shell`` with the shell grant, ``summon`` with the summon grant and depth left,
``lsp`` with the lsp grant when the hub runs language servers (always in-process: they are
shared), ``web`` with the web grant (its hosts and ``web_private`` make its policy; the config's
``web.search`` its search provider); the grants' per-server allow-lists narrow each to some of its
tools (an empty list: not mounted). How: in-process (a server built for this agent's scope, no
subprocess) by default, or over stdio (:func:`build_targets` gives the command, with the one
scrubbed environment) when the spec asks for process isolation; both run the same server code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mcp import StdioServerParameters

from dispatch.hub.config.execution import Placement
from dispatch.hub.mounts.outside import OutsideServers
from dispatch.hub.policy.grants import Grants
from dispatch.hub.policy.paths import ROOT
from dispatch.hub.policy.servers import BUILTIN_SERVERS, SHELL
from dispatch.servers import inbox, shell, summon
from dispatch.servers._base import ServerPlan
from dispatch.servers.fs import server as fs
from dispatch.servers.hublink import HubLink
from dispatch.servers.lsp import server as lsp
from dispatch.servers.lsp.server import LspBackend
from dispatch.servers.sandbox import ProcessLimits, SandboxSetting, ShellMode, choose_shell_mode
from dispatch.servers.sandbox.pids import hub_cgroup, pids_base
from dispatch.servers.sandbox.policy import scrub_environment
from dispatch.servers.web import server as web
from dispatch.servers.web.policy import WebPolicy
from dispatch.servers.web.search import SearchConfig

if TYPE_CHECKING:
    from dispatch.hub.mounts.hosts import HostEngine

ServerTarget = ServerPlan | StdioServerParameters
"""An in-process server, built on its first call, or the command that starts a stdio one."""


@dataclass(frozen=True)
class MountPlan:
    """What to mount for one agent: the grants, where, and how."""

    root: Path
    grants: Grants
    detached: bool = False
    isolated: bool = False
    lsp: LspBackend | None = None
    """The hub's language servers; None: no ``lsp`` mount, whatever the grants say."""
    sandbox: SandboxSetting = "auto"
    """The config's ``sandbox``: how the shell runs (see :func:`shell_mode`)."""
    processes: ProcessLimits = field(default_factory=ProcessLimits)
    """The config's ``limits.processes``: processes of the hub's, this agent's and one command's commands."""
    max_commands: int = shell.MAX_COMMANDS
    """The config's ``limits.commands_per_agent``: this agent's commands running at once."""
    web_search: SearchConfig | None = None
    """The config's ``web.search``: the provider of the web server's ``search`` tool; None: not configured."""
    outside: OutsideServers | None = None
    """The hub's outside MCP servers (config ``mcp_servers``, :mod:`dispatch.hub.mounts.outside`); None: none."""
    agent_id: str = ""
    """Whose mounts these are (an outside server's changed tool list is asked about in its name)."""
    hosts: HostEngine | None = None
    """Where its fs, shell and lsp servers run (``execution.engine: ray``); None: in this process."""
    placement: Placement | None = None
    """What its tool host needs of a node (its template's ``placement``)."""

    def kinds(self) -> list[str]:
        """The built-in servers to mount, in the table's order: those the grants mount and the hub can build."""
        return [s.name for s in BUILTIN_SERVERS if self.grants.mounts(s.name) and _MOUNTS[s.name].available(self)]

    def write_paths(self) -> list[Path]:
        return [self.root if p == ROOT else self.root / p for p in self.grants.write]

    def read_paths(self) -> list[Path] | None:
        """Where inside the root it may read besides its scope; None: the whole root."""
        return None if ROOT in self.grants.read else [self.root / p for p in self.grants.read]


def _module_params(module: str, args: list[str]) -> StdioServerParameters:
    # DISPATCH_HOME is no credential: the server's always-denied set includes the data directory.
    env = scrub_environment(os.environ, keep=("DISPATCH_HOME",))
    return StdioServerParameters(command=sys.executable, args=["-m", module, *args], env=env)


def _fs_target(plan: MountPlan, link: HubLink) -> ServerTarget:
    if not plan.isolated:
        return fs.plan_server(plan.root, plan.write_paths(), ask=link.request_access, read=plan.read_paths())
    args = ["--root", str(plan.root), *_read_args(plan)]
    if not plan.grants.write:
        args.append("--read-only")
    elif ROOT not in plan.grants.write:
        for path in plan.grants.write:
            args += ["--write", path]
    return _module_params("dispatch.servers.fs", args)


def _read_args(plan: MountPlan) -> list[str]:
    return [] if plan.read_paths() is None else ["--read", *plan.grants.read]


def shell_mode(plan: MountPlan) -> ShellMode:
    """How this agent's shell runs: sandboxed to its scope, disabled, or approved command by command."""
    return choose_shell_mode(plan.root, plan.write_paths(), plan.sandbox, read=plan.read_paths(), limits=plan.processes)


def _shell_target(plan: MountPlan, link: HubLink) -> ServerTarget:
    if not plan.isolated:
        mode = shell_mode(plan)
        return shell.plan_server(
            plan.root,
            launcher=mode.sandbox,
            ask=link.request_access,
            confirm_each=mode.confirm_each,
            refusal=mode.refusal,
            max_commands=plan.max_commands,
        )
    limits = plan.processes
    args = ["--root", str(plan.root), "--sandbox", plan.sandbox, *_read_args(plan)]
    args += ["--max-commands", str(plan.max_commands)]
    args += ["--processes", str(limits.total), str(limits.agent), str(limits.command)]
    base = pids_base()
    if base is not None:  # the server's cgroups go inside the hub's, so the hub's total holds
        args += ["--pids-parent", str(hub_cgroup(base, limits.total))]
    if not plan.grants.write:
        args.append("--read-only")
    elif ROOT not in plan.grants.write:
        args += ["--write", *plan.grants.write]
    return _module_params("dispatch.servers.shell", args)


def _web_target(plan: MountPlan) -> ServerTarget:
    policy = WebPolicy.from_grants(plan.grants.web, plan.grants.web_private)
    if not plan.isolated:
        return web.plan_server(policy, plan.web_search)
    args = [arg for host in policy.hosts or () for arg in ("--host", host)]
    if policy.private is True:
        args.append("--allow-private")
    else:
        args += [arg for net in policy.private or () for arg in ("--private", net)]
    search = plan.web_search
    if search is None:
        return _module_params("dispatch.servers.web", args)
    args += ["--search-provider", search.provider, "--search-max-results", str(search.max_results)]
    args += ["--search-base-url", search.base_url] if search.base_url else []
    params = _module_params("dispatch.servers.web", args)
    key = {web.SEARCH_KEY_ENV: search.api_key.get_secret_value()}  # not on the command line, where ps shows it
    return params.model_copy(update={"env": {**(params.env or {}), **key}})


def prompt_notes(plan: MountPlan) -> tuple[str, ...]:
    """What the agent's system prompt says about its mounts (the shell's sandbox, or its absence)."""
    return (shell_mode(plan).note,) if SHELL.name in plan.kinds() else ()


def _lsp_target(plan: MountPlan, link: HubLink) -> ServerTarget:
    assert plan.lsp is not None  # kinds() mounts lsp only when the hub runs language servers
    return lsp.plan_server(plan.root, plan.lsp)


def _always(plan: MountPlan) -> bool:
    return True


@dataclass(frozen=True)
class _Builder:
    """How the hub builds one built-in server for a plan, and whether it can."""

    target: Callable[[MountPlan, HubLink], ServerTarget]
    available: Callable[[MountPlan], bool] = _always


_MOUNTS: dict[str, _Builder] = {
    "inbox": _Builder(lambda plan, link: inbox.plan_server(link, detached=plan.detached)),
    "fs": _Builder(_fs_target),
    "shell": _Builder(_shell_target),
    "summon": _Builder(lambda plan, link: summon.plan_server(link)),
    "lsp": _Builder(_lsp_target, available=lambda plan: plan.lsp is not None),
    "web": _Builder(lambda plan, link: _web_target(plan)),
}
"""The builder of each server of :data:`~dispatch.hub.policy.servers.BUILTIN_SERVERS`, by its name."""


def build_targets(plan: MountPlan, link: HubLink) -> dict[str, ServerTarget]:
    """The server (or the command that starts it) for each mount of the plan."""
    return {kind: _MOUNTS[kind].target(plan, link) for kind in plan.kinds()}
