"""The catalog: everything a tree reads from config, and the specs it builds from templates.

:meth:`Catalog.load` reads the config files, the templates and the skills of one project root and
checks them together (a template naming a missing skill or child template is an error naming the
template file); nothing starts when it raises. :meth:`Catalog.builtin` holds Dispatch's own
templates and skills only, for trees built without a project's config (tests, embedding).

:meth:`Catalog.top_spec` is the top agent from a template; :meth:`Catalog.child_spec` is a summoned
child: the parent's template may limit which templates it summons, the child's template narrows the
parent's grants (never widens: the excess is refused, named), and the request narrows further.
A template's caps (:class:`~dispatch.hub.agents.spec.Caps`) apply to every agent of it: the user's
caps for a top agent replace them, a summon's for a child may only lower them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from dispatch.hub.agents.spec import NO_CAPS, AgentSpec, Caps
from dispatch.hub.config.files import Loc
from dispatch.hub.config.instructions import ProjectInstructions, project_instructions
from dispatch.hub.config.project import DispatchConfig, load_config
from dispatch.hub.config.skills import LoadedSkill, SkillIndex
from dispatch.hub.config.templates import Template, TemplateEntry, builtin_dir, load_templates, narrow, template_dirs
from dispatch.hub.errors import ConfigError, UserError, field_path
from dispatch.hub.ids import new_id
from dispatch.hub.llm.defaults import DefaultModel, default_model, no_model_hint
from dispatch.hub.policy.grants import Grants
from dispatch.hub.policy.paths import ROOT
from dispatch.hub.policy.servers import TEMPLATE_KINDS
from dispatch.servers.hublink import GrantRequest, LinkRefusal, SummonRequest

DEFAULT_TEMPLATE = "dispatch"


def _joined(*parts: str | None) -> str | None:
    text = "\n\n".join(p.strip() for p in parts if p and p.strip())
    return text or None


@dataclass(frozen=True)
class Catalog:
    """Templates, skills and settings of one project (or the built-ins alone)."""

    templates: Mapping[str, TemplateEntry]
    skills: SkillIndex
    config: DispatchConfig = field(default_factory=DispatchConfig)
    root: Path | None = None
    """The project it was loaded from (its top agents work there); None: the built-ins alone."""

    @classmethod
    def builtin(cls) -> Catalog:
        """Dispatch's own templates and skills; no user or project files are read."""
        return _builtin()

    @classmethod
    def load(cls, root: Path) -> Catalog:
        """The config, templates and skills for ``root``, checked together. Raises ConfigError."""
        root = root.resolve()
        loaded = load_config(root)
        catalog = cls(load_templates(template_dirs(root)), SkillIndex.discover(root), loaded.config, root)
        catalog.check()
        return catalog

    def check(self) -> None:
        """Every skill a template names exists and is unambiguous, and every outside MCP server it
        names is configured; ConfigError otherwise."""
        for entry in self.templates.values():
            self._check_skills(entry, entry.template, ())
            self._check_servers(entry, entry.template, ())

    def _check_servers(self, entry: TemplateEntry, template: Template, loc: Loc) -> None:
        for name in template.tools.outside() if template.tools is not None else ():
            if name not in self.config.mcp_servers:
                here = (*loc, "tools", name)
                known = ", ".join(self.config.mcp_servers) or "none are configured"
                raise ConfigError(
                    f"{entry.source.where(here)}: {field_path(here)}: unknown tool server {name!r}; expected a "
                    f"built-in one ({', '.join(TEMPLATE_KINDS)}) or one of the config's mcp_servers ({known})"
                )
        for index, child in enumerate(template.children or ()):
            if isinstance(child, Template):
                self._check_servers(entry, child, (*loc, "children", index))

    def _check_skills(self, entry: TemplateEntry, template: Template, loc: Loc) -> None:
        for index, ref in enumerate(template.skills):
            here = (*loc, "skills", index)
            try:
                self.skills.resolve(ref)
            except UserError as error:
                raise ConfigError(f"{entry.source.where(here)}: {field_path(here)}: {error}") from None
        for index, child in enumerate(template.children or ()):
            if isinstance(child, Template):
                self._check_skills(entry, child, (*loc, "children", index))

    # ---- templates -----------------------------------------------------------------------------

    def template(self, name: str) -> Template:
        """A template by name; ``parent/child`` names an inline child template. Raises UserError."""
        head, *rest = name.split("/")
        entry = self.templates.get(head)
        if entry is None:
            raise UserError(f"no template named {head!r}; expected one of: {', '.join(sorted(self.templates))}")
        template = entry.template
        for part in rest:
            child = template.child(part)
            if not isinstance(child, Template):
                raise UserError(f"template {template.name!r} has no inline child template {part!r}")
            template = child
        return template

    def _template_of(self, spec: AgentSpec) -> Template | None:
        if spec.template is None:
            return None
        try:
            return self.template(spec.template)
        except UserError:
            return None

    def _child_template(self, parent: AgentSpec, name: str) -> tuple[Template, str]:
        mine = self._template_of(parent)
        if mine is not None and mine.children is not None:
            listed = mine.child(name)
            if listed is None:
                allowed = ", ".join(mine.child_names()) or "none"
                raise LinkRefusal(f"your template {mine.name!r} may summon only these templates: {allowed}")
            if isinstance(listed, Template):
                return listed, f"{parent.template}/{listed.name}"
        try:
            return self.template(name), name
        except UserError as error:
            raise LinkRefusal(str(error)) from None

    def summonable(self, parent: AgentSpec) -> list[Template]:
        """The templates ``parent`` may summon: its template's children, or every template."""
        mine = self._template_of(parent)
        if mine is not None and mine.children is not None:
            return [c if isinstance(c, Template) else self.template(c) for c in mine.children]
        return [self.templates[name].template for name in sorted(self.templates)]

    # ---- skills ----------------------------------------------------------------------------------

    def skills_for(self, spec: AgentSpec) -> list[LoadedSkill]:
        """The skills an agent loads at start, in loading order. Raises UserError for a requested
        skill that is unknown or ambiguous."""
        template = self._template_of(spec)
        agent_type = spec.template.rsplit("/", 1)[-1] if spec.template else spec.name
        return self.skills.plan(
            agent_type,
            orchestrator=spec.grants.mounts("summon"),
            template=spec.template,
            template_skills=template.skills if template else (),
            requested=spec.skills,
        )

    def instructions_for(self, spec: AgentSpec) -> list[ProjectInstructions]:
        """The project's AGENTS.md and CLAUDE.md files an agent reads at start: the root's, and
        those of the folders its write scope lies in (:mod:`dispatch.hub.config.instructions`)."""
        root = spec.root or (str(self.root) if self.root is not None else None)
        return [] if root is None else project_instructions(Path(root), spec.scope)

    # ---- specs -----------------------------------------------------------------------------------

    def model_for(self, template: str, asked: str | None = None) -> DefaultModel | None:
        """The model a top agent of ``template`` gets, and why: ``asked`` (``--model``, a request's
        model), else the template's, else the config's default or the environment's
        (:func:`~dispatch.hub.llm.defaults.default_model`); None when there is none."""
        if asked:
            return DefaultModel(asked, "asked for (--model, or the request)")
        named = self.template(template).model
        if named:
            return DefaultModel(named, f"the {template} template names it")
        return default_model(self.config.models)

    def top_spec(
        self,
        task: str,
        *,
        model: str | None,
        template: str = DEFAULT_TEMPLATE,
        skills: Sequence[str] = (),
        isolated: bool = False,
        caps: Caps = NO_CAPS,
    ) -> AgentSpec:
        """The top agent of a run, from a template, with the user's ``caps`` over the template's
        (checked: :meth:`Caps.check`). Raises UserError (an unknown template or skill, no model, a
        cap that is not a positive number)."""
        caps.check()
        chosen = self.template(template)
        picked = self.model_for(chosen.name, model)
        if picked is None:
            raise UserError(f"no model for template {chosen.name!r}: {no_model_hint()}")
        model = picked.model
        private = self.config.web.allow_private  # the top agent's web_private grant
        if chosen.tools is None:
            web_private = private if isinstance(private, bool) else tuple(private)
            grants = Grants.everything().model_copy(update={"web_private": web_private})
        else:
            web = chosen.tools.allowed("web") != ()
            scope = (ROOT,) if chosen.writes() else ()
            request = GrantRequest(web=web or None, web_private=private or None, mcp_servers=True)
            grants = narrow(Grants.everything().model_copy(update={"web_private": True}), chosen, request, scope)
        spec = AgentSpec(
            id=new_id(),
            name=chosen.name,
            template=chosen.name,
            task=task,
            root=None if self.root is None else str(self.root),
            instructions=chosen.instructions,
            skills=list(skills),
            model=model,
            grants=grants,
            detached=chosen.detached,
            checkpoints=dict(chosen.checkpoints),
            isolated=isolated,
            placement=chosen.placement,
            max_children=chosen.max_children or AgentSpec.model_fields["max_children"].default,
            **caps.over(template_caps(chosen)).spec_fields(),
        )
        self.skills_for(spec)
        return spec

    def child_spec(self, parent: AgentSpec, request: SummonRequest, scope: tuple[str, ...], number: int) -> AgentSpec:
        """The spec of a child ``parent`` summons; ``scope`` is checked against siblings already.

        Its caps are the request's, each lowered to its template's (the caller checks them against
        what the parent has left). Raises LinkRefusal naming what is wrong: a template the parent
        may not use, grants or a template asking for more than the parent has, an unknown or
        ambiguous skill.
        """
        template, qualified = self._child_template(parent, request.template) if request.template else (None, None)
        try:
            if template is None:
                grants = parent.grants.for_child(request.grants, scope)
            else:
                grants = narrow(parent.grants, template, request.grants, scope)
        except ValueError as error:
            raise LinkRefusal(f"grants: {error}") from None
        excess = grants.excess_over(parent.grants)
        if excess:
            who = f"template {template.name!r} asks for" if template else "the child would get"
            raise LinkRefusal(f"{who} more than you have: " + "; ".join(excess))
        spec = AgentSpec(
            id=new_id(),
            parent_id=parent.id,
            name=request.name or f"{parent.name}.{number}",
            template=qualified,
            task=request.task,
            root=parent.root,
            instructions=_joined(template.instructions if template else None, request.instructions),
            skills=list(request.skills),
            model=request.model or (template.model if template else None) or parent.model,
            grants=grants,
            detached=request.detached or (template.detached if template else False),
            checkpoints=dict(template.checkpoints) if template else {},
            max_children=(template.max_children if template else None) or parent.max_children,
            isolated=parent.isolated,
            isolation=request.isolation or (template.isolation if template else None),
            placement=template.placement if template else None,
            **request_caps(request).within(template_caps(template) if template else NO_CAPS).spec_fields(),
        )
        try:
            self.skills_for(spec)
        except UserError as error:
            raise LinkRefusal(f"skills: {error}") from None
        return spec


def template_caps(template: Template) -> Caps:
    """The caps a template gives each of its agents."""
    return Caps(template.budget_usd, template.max_tokens, template.max_steps)


def request_caps(request: SummonRequest) -> Caps:
    """The caps a summon asks for its child."""
    return Caps(request.budget_usd, request.max_tokens, request.max_steps)


@cache
def _builtin() -> Catalog:
    catalog = Catalog(load_templates([builtin_dir()]), SkillIndex.builtin())
    catalog.check()
    return catalog
