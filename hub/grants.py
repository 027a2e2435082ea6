"""Grants: what an agent may do, and the rule that a child never gets more than its parent.

Paths in grants are root-relative posix strings (``"."`` is the whole project root). ``write`` is
the agent's *scope*: the paths it may write; siblings running at the same time never overlap.
Paths outside the root come through approvals in a later stage, not through grants here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dispatch.servers.hublink import GrantRequest

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


class Grants(BaseModel):
    """What one agent may do. Which servers are mounted follows from these flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shell: bool = Field(default=False, description="mount the shell server")
    summon: bool = Field(default=False, description="mount the summon server (an orchestrator)")
    lsp: bool = Field(default=False, description="mount the lsp server")
    web: bool = Field(default=False, description="web fetch (no web server exists yet: the grant mounts nothing)")
    read: tuple[str, ...] = Field(default=(ROOT,), description="root-relative paths it may read")
    write: tuple[str, ...] = Field(default=(), description="its scope: root-relative paths it may write")
    max_depth: int | None = Field(default=None, ge=0, description="levels of descendants; None: unlimited")
    tools: dict[str, tuple[str, ...]] = Field(
        default_factory=dict[str, tuple[str, ...]],
        description="per-server allow-lists (fs: only these tools); a server absent here offers all its tools",
    )

    @field_validator("read", "write", mode="before")
    @classmethod
    def _normalize(cls, value: Iterable[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(normalize_path(p) for p in value))

    @classmethod
    def everything(cls) -> Grants:
        """The top agent's grants: every server, the whole root, unlimited depth."""
        return cls(shell=True, summon=True, lsp=True, web=True, read=(ROOT,), write=(ROOT,))

    def serves(self, kind: str) -> bool:
        """Whether these grants give any tool of the server ``kind`` (inbox, fs, shell, ...)."""
        if self.tools.get(kind) == ():
            return False
        return bool(getattr(self, kind)) if kind in SERVER_FLAGS else True

    def excess_over(self, parent: Grants) -> list[str]:
        """Each way these grants exceed ``parent``'s, in words; empty when they are a subset."""
        excess: list[str] = []
        for flag in SERVER_FLAGS:
            if getattr(self, flag) and not getattr(parent, flag):
                excess.append(f"{flag}: the parent has no {flag} grant")
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
        """The grants a child asks for: unset fields inherit, except summon and web (off unless
        asked); per-server tool lists are inherited.

        The result is not checked here; call :meth:`excess_over` with these grants as parent.
        """
        depth = request.max_depth
        if depth is None and self.max_depth is not None:
            depth = max(self.max_depth - 1, 0)
        return Grants(
            shell=self.shell if request.shell is None else request.shell,
            summon=bool(request.summon),
            lsp=self.lsp if request.lsp is None else request.lsp,
            web=bool(request.web),
            read=self.read if request.read is None else tuple(request.read),
            write=tuple(scope),
            max_depth=depth,
            tools=self.tools,
        )
