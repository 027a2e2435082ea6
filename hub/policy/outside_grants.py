"""Grants of outside MCP servers (config ``mcp_servers``): which an agent gets, and which tools of each.

Its room: the outside-server half of :class:`dispatch.hub.policy.grants.Grants`. ``Grants.mcp_servers`` is
a tuple of server names, or ``"all"`` (every configured server: the top agent's). The tools of
one server are narrowed the way built-in servers' are, in ``Grants.tools[name]``. A child gets an
outside server only when asked (``summon``'s ``grants.mcp_servers``, or its template's ``tools``),
and only one its parent has, with no tool the parent lacks of it:

- summon ``grants: {mcp_servers: {github: true}}``: github with the tools the parent has of it;
  ``{github: [get_issue]}``: only that tool; ``mcp_servers: true``: every server the parent has.
- a template's ``tools: {github: true}`` or ``{github: [get_issue]}`` sets its agents' outside
  servers (the request may leave some out); a template that names none leaves them to the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from dispatch.hub.policy.servers import BUILTIN_KINDS
from dispatch.servers.hublink import GrantRequest

__all__ = [
    "ALL",
    "McpGrant",
    "OutsideGrant",
    "asked_servers",
    "asked_tools",
    "has_server",
    "mcp_excess",
    "template_outside",
]

ALL = "all"
McpGrant = tuple[str, ...] | Literal["all"]
"""Outside servers granted: these names, or ``"all"`` configured ones."""


def has_server(grant: McpGrant, name: str) -> bool:
    return grant == ALL or name in grant


def mcp_excess(mine: McpGrant, theirs: McpGrant) -> list[str]:
    """How the outside servers ``mine`` exceed the parent's ``theirs``, in words."""
    if theirs == ALL or not mine:
        return []
    allowed = ", ".join(theirs) or "none"
    if mine == ALL:
        return [f"mcp_servers: all of them, but the parent has only {allowed}"]
    return [
        f"mcp server {name!r}: the parent has no {name} grant (it has {allowed})" for name in mine if name not in theirs
    ]


def asked_servers(request: GrantRequest, parents: McpGrant) -> McpGrant:
    """The servers a summon request asks for (none unless asked; ``true``: all the parent has)."""
    asked = request.mcp_servers
    if asked is None or asked is False:
        return ()
    if asked is True:
        return parents
    return tuple(name for name, wanted in asked.items() if wanted is not False)


def asked_tools(request: GrantRequest) -> dict[str, tuple[str, ...]]:
    """The tool lists a summon request narrows outside servers to (``{github: [get_issue]}``)."""
    asked = request.mcp_servers
    if not isinstance(asked, dict):
        return {}
    return {name: tuple(wanted) for name, wanted in asked.items() if isinstance(wanted, list)}


@dataclass(frozen=True)
class OutsideGrant:
    """The outside servers of a template's agent, and the tool lists narrowing them."""

    servers: McpGrant
    tools: dict[str, tuple[str, ...]]


def template_outside(
    template: str,
    listed: Mapping[str, tuple[str, ...] | None],
    request: GrantRequest,
    base: McpGrant,
    base_tools: Mapping[str, tuple[str, ...]],
) -> OutsideGrant:
    """The outside servers of a child of ``template``, whose ``tools`` list ``listed`` (name: None
    for all its tools, ``()`` for none, or some). ``base`` / ``base_tools``: what the request alone
    gives (:meth:`Grants.for_child`). Raises ValueError when the request asks for more than the
    template has."""
    outside_tools = {k: v for k, v in base_tools.items() if k not in BUILTIN_KINDS}
    if not listed:
        return OutsideGrant(base, outside_tools)
    granted = {name: tools for name, tools in listed.items() if tools != ()}
    asked = request.mcp_servers
    if isinstance(asked, dict):
        for name, wanted in asked.items():
            if wanted is False:
                continue
            if name not in granted:
                raise ValueError(f"template {template!r} has no {name}; summon it without mcp_servers.{name}")
            mine = granted[name]
            if isinstance(wanted, list) and mine is not None and any(t not in mine for t in wanted):
                extra = ", ".join(t for t in wanted if t not in mine)
                raise ValueError(f"template {template!r} allows only {', '.join(mine)} of {name}, not {extra}")
        names = [n for n in granted if asked.get(n, False) is not False]
    else:
        names = [] if asked is False else list(granted)
    tools: dict[str, tuple[str, ...]] = {}
    for name in names:
        wanted = asked.get(name) if isinstance(asked, dict) else None
        chosen = tuple(wanted) if isinstance(wanted, list) else granted[name]
        if chosen is not None:
            tools[name] = chosen
    return OutsideGrant(tuple(names), tools)
