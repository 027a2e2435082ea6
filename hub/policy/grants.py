"""Grants: what an agent may do, and the rule that a child never gets more than its parent.

Paths in grants are root-relative posix strings (``"."`` is the whole project root). ``write`` is
the agent's *scope*: the paths it may write; siblings running at the same time never overlap.
Paths outside the root come through approvals in a later stage, not through grants here.

``web`` is ``true`` (any public host) or a list of hosts, each covering its subdomains; a child's
hosts must be covered by its parent's (``true`` covers any list). ``web_private`` lets the web server
reach loopback, private and link-local addresses: ``true`` for all, or a list of addresses and
networks, likewise covered by the parent's (:mod:`dispatch.servers.web.policy` holds both rules).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import PurePosixPath
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dispatch.hub.policy.outside_grants import McpGrant, asked_servers, asked_tools, has_server, mcp_excess
from dispatch.servers.hublink import GrantRequest
from dispatch.servers.web.policy import host_covers, network_covers, normalize_host, normalize_network

ROOT = "."
SERVER_FLAGS = ("shell", "summon", "lsp", "web")
"""Servers mounted only with their grant flag; ``inbox`` and ``fs`` are always mounted."""


def normalize_path(path: str) -> str:
    """A root-relative path in canonical form (``"."``, ``"src"``, ``"src/app.py"``).

    Raises ValueError for absolute paths and paths that climb out with ``..``.
    """
    raw = path.strip()
    if not raw:
        raise ValueError("an empty path is not a scope; use '.' for the whole project root")
    pure = PurePosixPath(raw.replace("\\", "/"))
    if pure.is_absolute():
        raise ValueError(f"path {path!r} is absolute; grants take paths relative to the project root")
    parts = [p for p in pure.parts if p not in (".", "")]
    if ".." in parts:
        raise ValueError(f"path {path!r} climbs out of the project root with '..'")
    return "/".join(parts) or ROOT


def covers(container: str, path: str) -> bool:
    """Whether ``container`` includes ``path`` (both normalized)."""
    return container == ROOT or path == container or path.startswith(container + "/")


def overlaps(a: str, b: str) -> bool:
    """Whether two normalized paths share any file."""
    return covers(a, b) or covers(b, a)


def covered_by_any(path: str, containers: Iterable[str]) -> bool:
    return any(covers(c, path) for c in containers)


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
        return cls(shell=True, summon=True, lsp=True, web=True, read=(ROOT,), write=(ROOT,), mcp_servers="all")

    def serves(self, kind: str) -> bool:
        """Whether these grants give any tool of the server ``kind`` (inbox, fs, shell, ...)."""
        if self.tools.get(kind) == ():
            return False
        if kind in SERVER_FLAGS:
            return bool(getattr(self, kind))
        return kind in ("inbox", "fs") or has_server(self.mcp_servers, kind)  # else an outside server

    def excess_over(self, parent: Grants) -> list[str]:
        """Each way these grants exceed ``parent``'s, in words; empty when they are a subset."""
        excess: list[str] = []
        for flag in SERVER_FLAGS:
            if flag != "web" and getattr(self, flag) and not getattr(parent, flag):
                excess.append(f"{flag}: the parent has no {flag} grant")
        excess += _list_excess("web", self.web, parent.web, host_covers)
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
        """The grants a child asks for: unset fields inherit, except summon, web and web_private
        (off unless asked; ``true`` asks for as much as the parent has); per-server tool lists are
        inherited.

        The result is not checked here; call :meth:`excess_over` with these grants as parent.
        """
        depth = request.max_depth
        if depth is None and self.max_depth is not None:
            depth = max(self.max_depth - 1, 0)
        return Grants(
            shell=self.shell if request.shell is None else request.shell,
            summon=bool(request.summon),
            lsp=self.lsp if request.lsp is None else request.lsp,
            web=_inherit(request.web, self.web),
            web_private=_inherit(request.web_private, self.web_private) if request.web else False,
            read=self.read if request.read is None else tuple(request.read),
            write=tuple(scope),
            max_depth=depth,
            tools={**self.tools, **asked_tools(request)},
            mcp_servers=asked_servers(request, self.mcp_servers),
        )
