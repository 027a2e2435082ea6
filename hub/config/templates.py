"""Templates: named agent types from YAML files, one template per file.

Searched in order, a later file replacing an earlier one of the same name: Dispatch's own
(``configs/templates/``), the user's (``~/.config/dispatch/templates/``), the project's
(``<root>/.dispatch/templates/``). A template sets instructions, a model (tag or name), which tool
servers and which tools of each (``fs: [read_file, grep]``, ``shell: true``), skills, the child
templates its agents may summon (by name, or inline), how many children run at once, checkpoints,
whether it is detached, and caps on each of its agents (``budget_usd`` and ``max_tokens`` for it
and its children, ``max_steps`` for its own steps). :func:`narrow` turns a template into grants
under a parent's; a template can only narrow what its parent has (the caller refuses the excess).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationInfo, field_validator

from dispatch.hub.config.execution import Placement
from dispatch.hub.config.files import Source, merge, validate
from dispatch.hub.config.project import global_dir, project_dir
from dispatch.hub.errors import ConfigError
from dispatch.hub.policy.checkpoints import CheckpointMode, Checkpoints
from dispatch.hub.policy.grants import Grants
from dispatch.hub.policy.outside_grants import template_outside
from dispatch.hub.policy.servers import FS, GRANTED_SERVERS, LSP, SHELL, SUMMON, TEMPLATE_KINDS, WEB, builtin_server
from dispatch.servers.hublink import GrantRequest

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class ToolSet(BaseModel):
    """Which tool servers a template's agents get, and which tools of each: ``true`` (all its
    tools), ``false`` or absent (the server is not mounted), or a list of tool names. Outside MCP
    servers of the config (``mcp_servers``) are named the same way (``github: [get_issue]``); their
    names are checked against the config when the catalog loads (:mod:`dispatch.hub.policy.outside_grants`).
    Its fields are the built-in servers a template names (:data:`TEMPLATE_KINDS`, a test keeps them
    in step), each described by its row of the table."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, bool | list[str]] = Field(init=False)  # pyright: ignore[reportIncompatibleVariableOverride]  # outside servers

    fs: bool | list[str] = Field(default=False, description=FS.summary)
    shell: bool | list[str] = Field(default=False, description=SHELL.summary)
    lsp: bool | list[str] = Field(default=False, description=LSP.summary)
    summon: bool | list[str] = Field(default=False, description=SUMMON.summary)
    web: bool | list[str] = Field(default=False, description=WEB.summary)

    @field_validator("*", mode="before")
    @classmethod
    def _tool_choice(cls, value: Any, info: ValidationInfo) -> bool | list[str]:
        if value is None or isinstance(value, bool):
            return bool(value)
        kind = info.field_name or ""
        if not isinstance(value, list) or not all(isinstance(v, str) for v in cast(list[Any], value)):
            raise ValueError(f"expected true, false or a list of {kind} tool names, got {value!r}")
        names = cast(list[str], value)
        server = builtin_server(kind)
        known = server.tools if server is not None else None
        unknown = [n for n in names if known is not None and n not in known]
        if unknown:
            raise ValueError(f"unknown {kind} tool {unknown[0]!r}; expected some of: {', '.join(known or ())}")
        return names

    def outside(self) -> dict[str, tuple[str, ...] | None]:
        """The outside servers it names: each with None (all its tools), ``()`` (none) or some."""
        return {name: self.allowed(name) for name in self.__pydantic_extra__}

    def allowed(self, kind: str) -> tuple[str, ...] | None:
        """The tools of one server: None for all of them, ``()`` for none (not mounted)."""
        value: bool | list[str] = getattr(self, kind, False)
        if value is True:
            return None
        return tuple(value) if isinstance(value, list) else ()


def _entry_kind(value: Any) -> str:
    return "template-name" if isinstance(value, str) else "inline-template"


class Template(BaseModel):
    """A named agent type: what its agents are told, may do, and may start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="what summon and --template call it; default: the file name")
    description: str = Field(default="", description="one line for the user and for a parent choosing a template")
    instructions: str | None = Field(default=None, description="the role's prompt, after Dispatch's own agent rules")
    model: str | None = Field(default=None, description="a model tag (coding, heavy) or model name; none: parent's")
    tools: ToolSet | None = Field(default=None, description="servers and tools; none: as the parent (summon off)")
    skills: list[str] = Field(default_factory=list[str], description="skills to load: NAME, global:NAME, ...")
    children: (
        list[
            Annotated[
                Annotated[str, Tag("template-name")] | Annotated[Template, Tag("inline-template")],
                Discriminator(_entry_kind),
            ]
        ]
        | None
    ) = Field(default=None, description="templates its agents may summon, by name or inline; none: any template")
    max_children: int | None = Field(default=None, ge=1, description="children running at once (more wait)")
    checkpoints: Checkpoints = Field(
        default_factory=dict[str, CheckpointMode],
        description="where the agent stops for the user's approval: a list of names (each ask), or name: "
        "ask | off | auto_approve DURATION; names before_report (plan, report), before_write (edit), "
        "before_destructive (destructive), before_merge (merge)",
    )
    detached: bool = Field(default=False, description="the agent also has its own conversation with the user")
    isolation: Literal["worktree"] | None = Field(
        default=None,
        description="worktree: each agent of it (summoned as a child) works in a git worktree of its own, "
        "merged back into its parent's files when it reports",
    )
    placement: Placement | None = Field(
        default=None,
        description="with execution.engine ray: the Ray resources and node labels its agents' tool hosts need",
    )
    budget_usd: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="US dollars each agent of it (with its children) may spend"
    )
    max_tokens: int | None = Field(default=None, gt=0, description="tokens (in + out) each agent of it may use")
    max_steps: int | None = Field(default=None, gt=0, description="steps (model calls) each agent of it may take")

    def child(self, name: str) -> Template | str | None:
        """An inline child template of this name, the name if it is listed by name, else None."""
        for entry in self.children or ():
            if isinstance(entry, Template) and entry.name == name:
                return entry
            if entry == name:
                return name
        return None

    def child_names(self) -> list[str]:
        return [e if isinstance(e, str) else e.name for e in self.children or ()]

    def tools_summary(self) -> str:
        """``fs[read_file,grep] shell``: its servers, and the tools of those it narrows."""
        if self.tools is None:
            return "as the parent"
        parts: list[str] = []
        for kind in [*ToolSet.model_fields, *self.tools.outside()]:
            allowed = self.tools.allowed(kind)
            parts += [kind] if allowed is None else [f"{kind}[{','.join(allowed)}]"] if allowed else []
        return " ".join(parts) or "none"

    def writes(self) -> bool:
        """Whether its agents can write files (fs with a write tool)."""
        if self.tools is None:
            return True
        allowed = self.tools.allowed(FS.name)
        return allowed is None or any(t in allowed for t in FS.write_tools)


@dataclass(frozen=True)
class TemplateEntry:
    """A loaded template and the file it came from."""

    template: Template
    source: Source
    replaced: tuple[str, ...] = ()
    """Files of the same name it overrides field by field (earlier in the search order)."""


def builtin_dir() -> Traversable:
    """Dispatch's own templates: ``configs/templates/``."""
    return files("dispatch.configs") / "templates"


def template_dirs(root: Path | None) -> list[Traversable]:
    """Where templates are searched, in order (later wins)."""
    dirs: list[Traversable] = [builtin_dir(), global_dir() / "templates"]
    return dirs + ([project_dir(root) / "templates"] if root is not None else [])


def _files(folder: Traversable) -> Iterator[Traversable]:
    if folder.is_dir():
        yield from sorted((f for f in folder.iterdir() if f.name.endswith((".yaml", ".yml"))), key=lambda f: f.name)


def load_templates(dirs: Sequence[Traversable]) -> dict[str, TemplateEntry]:
    """Every template in ``dirs``; raises ConfigError naming file, line, field and expectation.

    A template of a name an earlier folder defined too (a project's ``dispatch.yaml`` over the
    built-in one) overrides it field by field, as config files do: mappings (``tools``) merge key by
    key, and any other field the later file gives replaces the earlier one's."""
    found: dict[str, TemplateEntry] = {}
    layers: dict[str, list[Source]] = {}
    for folder in dirs:
        here: dict[str, str] = {}
        for file in _files(folder):
            source = Source.read(str(file), file.read_text(encoding="utf-8"))
            name = str(source.data.get("name") or file.name.rsplit(".", 1)[0])
            if name in here:
                raise ConfigError(f"{source.path}: template {name!r} is defined in {here[name]} too")
            here[name] = source.path
            sources = [*layers.get(name, []), source]
            data, owners = merge([s.data for s in sources])
            data.setdefault("name", name)
            template = validate(Template, data, sources, owners)
            earlier = found.get(name)
            replaced = (*earlier.replaced, earlier.source.path) if earlier else ()
            layers[name] = sources
            found[name] = TemplateEntry(template, source, replaced)
    for entry in found.values():
        for index, name in enumerate(entry.template.children or ()):
            if isinstance(name, str) and name not in found:
                raise ConfigError(
                    f"{entry.source.where(('children', index))}: children[{index}]: no template named {name!r}; "
                    f"expected one of: {', '.join(sorted(found))}"
                )
    return found


def narrow(parent: Grants, template: Template, request: GrantRequest, scope: tuple[str, ...]) -> Grants:
    """The grants of a child of ``template`` that the parent asks for with ``request``.

    The template sets the servers and tools; the request may only turn servers off (``web`` is
    off unless the request turns it on, and its hosts come from the request). Raises ValueError
    when the request asks for more than the template. The result is not checked against
    ``parent``: call ``excess_over``.
    """
    tools = template.tools
    if tools is None:
        return parent.for_child(request, scope)
    flags: dict[str, bool] = {}
    for server in GRANTED_SERVERS:
        kind = server.name
        asked: bool | list[str] | None = getattr(request, kind)
        if asked and tools.allowed(kind) == ():
            raise ValueError(f"template {template.name!r} has no {kind}; summon it without {kind}: true")
        if server.grant == "flag":  # web and its hosts come from the request alone (parent.for_child)
            flags[kind] = tools.allowed(kind) != () and asked is not False
    if scope and not template.writes():
        raise ValueError(f"template {template.name!r} cannot write files; summon it without a scope")
    lists = {k: tools.allowed(k) for k in TEMPLATE_KINDS}
    granted = {s.name for s in GRANTED_SERVERS}  # off by its flag: no empty allow-list needed
    allow = {k: a for k, a in lists.items() if a is not None and (a or k not in granted)}
    base = parent.for_child(request, scope)
    outside = template_outside(template.name, tools.outside(), request, base.mcp_servers, base.tools)
    return base.model_copy(update={**flags, "tools": {**allow, **outside.tools}, "mcp_servers": outside.servers})
