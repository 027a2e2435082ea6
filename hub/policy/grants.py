"""Grants: what an agent may do, and the rule that a child never gets more than its parent.

Paths in grants are root-relative posix strings (``"."`` is the whole project root). ``write`` is
the agent's *scope*: the paths it may write; siblings running at the same time never overlap.
Paths outside the root come through approvals in a later stage, not through grants here.

``web`` is ``true`` (any public host) or a list of hosts, each covering its subdomains; a child's
hosts must be covered by its parent's (``true`` covers any list). ``web_private`` lets the web server
reach loopback, private and link-local addresses: ``true`` for all, or a list of addresses and
networks, likewise covered by the parent's (:mod:`dispatch.servers.web.policy` holds both rules).

Which fields turn which built-in server on, and what a child inherits of them, is the table in
:mod:`dispatch.hub.policy.servers`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dispatch.hub.policy.outside_grants import McpGrant, asked_servers, asked_tools, has_server, mcp_excess
from dispatch.hub.policy.paths import ROOT, covered_by_any, normalize_path
from dispatch.hub.policy.servers import GRANTED_SERVERS, builtin_server
from dispatch.servers.hublink import GrantRequest
from dispatch.servers.web.policy import host_covers, network_covers, normalize_host, normalize_network

AnyOrList = bool | tuple[str, ...]
"""A grant that is off, on for everything (``True``), or on for some entries only."""


def _any_or_list(value: Any, normalize: Callable[[str], str]) -> Any:
    if isinstance(value, list | tuple):
        entries = tuple(dict.fromkeys(normalize(str(v)) for v in cast(Iterable[Any], value)))
        return entries or False
    return value


def _list_excess(name: str, mine: AnyOrList, theirs: AnyOrList, inside: Callable[[str, str], bool]) -> list[str]:
    """How the grant ``mine`` exceeds the parent's ``theirs`` (``inside(container, entry)``)."""
    if not mine or theirs is True:
        return []
    if not theirs:
        return [f"{name}: the parent has no {name} grant"]
    allowed = ", ".join(theirs)
    if mine is True:
        return [f"{name}: true (all), but the parent has only {allowed}"]
    return [
        f"{name} {entry!r}: not covered by the parent's {name} ({allowed})"
        for entry in mine
        if not any(inside(t, entry) for t in theirs)
    ]


def _inherit(asked: bool | list[str] | None, parents: AnyOrList) -> AnyOrList:
    """A child's grant from its request: ``True`` means as much as the parent has."""
    if asked is True and parents:
        return parents
    return tuple(asked) if isinstance(asked, list) else bool(asked)


class Grants(BaseModel):
    """What one agent may do. Which servers are mounted follows from these flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shell: bool = Field(default=False, description="mount the shell server")
    summon: bool = Field(default=False, description="mount the summon server (an orchestrator)")
    lsp: bool = Field(default=False, description="mount the lsp server")
    web: AnyOrList = Field(
        default=False, description="mount the web server: true for any public host, or the hosts it may fetch from"
    )
    web_private: AnyOrList = Field(
        default=False,
        description="the web server may also reach loopback, private and link-local addresses: true for all, "
        "or a list of addresses and networks (127.0.0.1, 10.0.0.0/8)",
    )
    read: tuple[str, ...] = Field(default=(ROOT,), description="root-relative paths it may read")
    write: tuple[str, ...] = Field(default=(), description="its scope: root-relative paths it may write")
    max_depth: int | None = Field(default=None, ge=0, description="levels of descendants; None: unlimited")
    tools: dict[str, tuple[str, ...]] = Field(
        default_factory=dict[str, tuple[str, ...]],
        description="per-server allow-lists (fs: only these tools); a server absent here offers all its tools",
    )
    mcp_servers: McpGrant = Field(
        default=(), description="outside MCP servers of the config, by name; 'all': every configured one"
    )

    @field_validator("read", "write", mode="before")
    @classmethod
    def _normalize(cls, value: Iterable[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(normalize_path(p) for p in value))

    @field_validator("web", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        return _any_or_list(value, normalize_host)

    @field_validator("web_private", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        return _any_or_list(value, normalize_network)

    @classmethod
    def everything(cls) -> Grants:
        """The top agent's grants: every server, the whole root, unlimited depth; no private
        network addresses (``web_private`` comes from the config's ``web.allow_private``)."""
        servers = {server.name: True for server in GRANTED_SERVERS}
        return cls.model_validate({**servers, "read": (ROOT,), "write": (ROOT,), "mcp_servers": "all"})

    def serves(self, kind: str) -> bool:
        """Whether these grants give any tool of the server ``kind`` (inbox, fs, shell, ...)."""
        if self.tools.get(kind) == ():
            return False
        server = builtin_server(kind)
        if server is None:  # an outside server
            return has_server(self.mcp_servers, kind)
        return server.grant == "always" or bool(getattr(self, kind))

    def mounts(self, kind: str) -> bool:
        """Whether an agent with these grants gets the server ``kind``: it serves it, and one that
        starts children (summon) only while ``max_depth`` leaves a level below."""
        server = builtin_server(kind)
        return self.serves(kind) and not (server is not None and server.needs_depth and self.max_depth == 0)

    def excess_over(self, parent: Grants) -> list[str]:
        """Each way these grants exceed ``parent``'s, in words; empty when they are a subset."""
        excess: list[str] = []
        for server in GRANTED_SERVERS:
            mine_on, theirs_on = getattr(self, server.name), getattr(parent, server.name)
            if server.grant == "hosts":
                excess += _list_excess(server.name, mine_on, theirs_on, host_covers)
            elif mine_on and not theirs_on:
                excess.append(f"{server.name}: the parent has no {server.name} grant")
        excess += _list_excess("web_private", self.web_private, parent.web_private, network_covers)
        excess += mcp_excess(self.mcp_servers, parent.mcp_servers)
        for kind, theirs in parent.tools.items():
            mine = self.tools.get(kind)
            if not self.serves(kind):
                continue
            wider = "all of them" if mine is None else ", ".join(t for t in mine if t not in theirs)
            if wider:
                excess.append(f"{kind} tools {wider}: the parent may use only {', '.join(theirs) or 'none'}")
        for kind, mine, theirs in (("read", self.read, parent.read), ("write", self.write, parent.write)):
            for path in mine:
                if not covered_by_any(path, theirs):
                    allowed = ", ".join(repr(p) for p in theirs) or "nothing"
                    excess.append(f"{kind} {path!r}: outside the parent's {kind} paths ({allowed})")
        if parent.max_depth is not None and (self.max_depth is None or self.max_depth >= parent.max_depth):
            mine_depth = "unlimited" if self.max_depth is None else str(self.max_depth)
            excess.append(f"max_depth {mine_depth}: the parent has {parent.max_depth} levels below it")
        return excess

    def for_child(self, request: GrantRequest, scope: Iterable[str]) -> Grants:
        """The grants a child asks for: unset fields inherit, except the servers the table does
        not let a child inherit (summon, web) and web_private: those are off unless asked (``true``
        asks for as much as the parent has); per-server tool lists are inherited.

        The result is not checked here; call :meth:`excess_over` with these grants as parent.
        """
        depth = request.max_depth
        if depth is None and self.max_depth is not None:
            depth = max(self.max_depth - 1, 0)
        servers: dict[str, AnyOrList] = {}
        for server in GRANTED_SERVERS:
            asked: bool | list[str] | None = getattr(request, server.name)
            parents: AnyOrList = getattr(self, server.name)
            servers[server.name] = parents if asked is None and server.inherited else _inherit(asked, parents)
        return Grants.model_validate(
            {
                **servers,
                "web_private": _inherit(request.web_private, self.web_private) if request.web else False,
                "read": self.read if request.read is None else tuple(request.read),
                "write": tuple(scope),
                "max_depth": depth,
                "tools": {**self.tools, **asked_tools(request)},
                "mcp_servers": asked_servers(request, self.mcp_servers),
            }
        )
