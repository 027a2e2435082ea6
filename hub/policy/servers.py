"""The built-in tool servers: the one table every other room reads.

A built-in server is named the way an outside one is (config ``mcp_servers``): by the mount kind
its tools come from. This table says once, for each, how a grant turns it on, what a child
inherits, whether its results are outside data and which tools it has. The grants
(:mod:`dispatch.hub.policy.grants`), the templates' ``tools``, the outside servers' names (none may
take a built-in one), the catalog's checks and the mounts (:mod:`dispatch.hub.mounts.plan` builds
each server, keyed by these names) read it; ``GrantRequest`` (the summon server's side, which
imports nothing of the hub) names the same flags, and a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BUILTIN_KINDS",
    "BUILTIN_SERVERS",
    "FS",
    "GRANTED_SERVERS",
    "INBOX",
    "LSP",
    "SHELL",
    "SUMMON",
    "TEMPLATE_KINDS",
    "UNTRUSTED_KINDS",
    "WEB",
    "BuiltinServer",
    "builtin_server",
]

Grant = Literal["always", "flag", "hosts"]


@dataclass(frozen=True)
class BuiltinServer:
    """One built-in tool server."""

    name: str
    grant: Grant
    """How an agent gets it: ``always`` (no grant flag: every agent, unless its allow-list is
    empty); ``flag`` (the true/false field of the same name in the grants); ``hosts`` (the field
    of the same name: true for any host, or a list of hosts, each covered by the parent's)."""
    summary: str
    """What a template gets by naming it, in a few words."""
    inherited: bool = False
    """Whether a child whose summon request leaves the flag unset has its parent's (else: off
    unless asked, ``true`` asking for as much as the parent has)."""
    in_templates: bool = True
    """Whether a template's ``tools`` names it (not ``inbox``: every agent reads its messages)."""
    needs_depth: bool = False
    """Mounted only while ``max_depth`` leaves a level below the agent (``summon`` starts children)."""
    untrusted: bool = False
    """Its results are outside data: marked as such before the model reads them."""
    tools: tuple[str, ...] | None = None
    """Its tools, to check a template's list when it loads (a test keeps them true); None: known
    only once it is mounted."""
    write_tools: tuple[str, ...] = ()
    """Its tools that change files: held at ``before_write``; a template without them cannot write."""


INBOX = BuiltinServer("inbox", "always", "messages from the user and from children", in_templates=False)
FS = BuiltinServer(
    "fs",
    "always",
    "files: read, list, glob, grep; write within scope",
    tools=("read_file", "write_file", "edit_file", "list_dir", "glob", "grep"),
    write_tools=("write_file", "edit_file"),
)
SHELL = BuiltinServer("shell", "flag", "shell commands in the project root", inherited=True, tools=("run",))
SUMMON = BuiltinServer(
    "summon",
    "flag",
    "child agents: summon, wait, message, cancel",
    needs_depth=True,
    tools=(
        *("summon", "wait", "message_child", "cancel_child", "compact_child", "children", "child_changes"),
        "templates",
    ),
)
LSP = BuiltinServer("lsp", "flag", "language-server diagnostics", inherited=True)
WEB = BuiltinServer(
    "web",
    "hosts",
    "web fetch and search, only when the parent grants web in summon too (with its hosts)",
    untrusted=True,
    tools=("fetch", "search"),
)

BUILTIN_SERVERS: tuple[BuiltinServer, ...] = (INBOX, FS, SHELL, SUMMON, LSP, WEB)
"""Every built-in server, in the order an agent's mounts list them."""

_BY_NAME = {server.name: server for server in BUILTIN_SERVERS}

BUILTIN_KINDS: tuple[str, ...] = tuple(_BY_NAME)
"""The built-in servers' names: an outside server may not take one of these."""
GRANTED_SERVERS: tuple[BuiltinServer, ...] = tuple(s for s in BUILTIN_SERVERS if s.grant != "always")
"""The servers mounted only with their grant (a field of the grants and of a summon request)."""
TEMPLATE_KINDS: tuple[str, ...] = tuple(s.name for s in BUILTIN_SERVERS if s.in_templates)
"""The built-in servers a template's ``tools`` may name."""
UNTRUSTED_KINDS: frozenset[str] = frozenset(s.name for s in BUILTIN_SERVERS if s.untrusted)
"""The built-in servers whose results are outside data."""


def builtin_server(name: str) -> BuiltinServer | None:
    """The built-in server of this name, or None (an outside server's name, or none at all)."""
    return _BY_NAME.get(name)
