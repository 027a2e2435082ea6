"""What ``dispatch templates`` and ``dispatch skills`` print: the catalog (and the project's
instructions files) as plain text."""

from __future__ import annotations

from dispatch.hub.agents.catalog import Catalog
from dispatch.hub.config.files import display_path
from dispatch.hub.config.instructions import project_instructions, subfolder_instructions
from dispatch.hub.config.skills import Skill
from dispatch.hub.config.templates import Template
from dispatch.hub.errors import UserError


def _table(rows: list[tuple[str, ...]], indent: str = "") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def templates_text(catalog: Catalog) -> str:
    """Each template: name, what it is, its tools, and the file it came from (and what it overrides)."""
    lines: list[str] = []
    for name in sorted(catalog.templates):
        entry = catalog.templates[name]
        template = entry.template
        lines.append(f"{name}{' (detached)' if template.detached else ''}")
        rows = [("description", template.description or "-"), ("tools", template.tools_summary())]
        optional = (
            ("model", template.model or ""),
            ("children", "none" if template.children == [] else ", ".join(template.child_names())),
            ("max children", str(template.max_children or "")),
            ("skills", ", ".join(template.skills)),
            ("checkpoints", ", ".join(f"{name} ({mode})" for name, mode in template.checkpoints.items())),
        )
        rows += [(label, value) for label, value in optional if value]
        rows.append(("file", entry.source.path))
        rows += [("overrides", path) for path in entry.replaced]
        lines += _table(rows, "  ")
    return "\n".join(lines)


def _skill_row(skill: Skill, origin: str) -> tuple[str, str, str]:
    return (skill.ref, origin, skill.shown)


def skills_text(catalog: Catalog, agent: str | None, orchestrator: bool | None = None) -> str:
    """What an agent of this name would load, in order (the project's instructions files, then the
    skills, with scopes), and the skills it may load on demand.

    Whether it is an orchestrator (``<name>.o.txt``) comes from its template (summon) unless given.
    """
    template: Template | None = None
    if agent is not None and agent in catalog.templates:
        template = catalog.template(agent)
    if orchestrator is None:
        orchestrator = bool(template and template.tools and template.tools.allowed("summon") != ())
    try:
        plan = catalog.skills.plan(
            agent or "",
            orchestrator=orchestrator,
            template=template.name if template else None,
            template_skills=template.skills if template else (),
        )
    except UserError as error:
        raise UserError(f"template {agent!r}: {error}") from None
    kind = "orchestrator" if orchestrator else "subagent"
    head = f"Agent {agent!r} ({kind}{', template ' + template.name if template else ''})" if agent else "Every agent"
    lines = [f"{head} loads, in this order:"]
    if agent is not None and template is None and not catalog.skills.maps(agent):
        known = ", ".join(sorted(catalog.templates))
        lines.insert(0, f"warning: no template or skill mapping is named {agent!r} (templates: {known}); "
                        "shown: what any agent of that name would load")  # fmt: skip
    rows = _instructions_rows(catalog) + [_skill_row(s.skill, s.origin) for s in plan]
    lines += _table(rows, "  ") if rows else ["  (no skills)"]
    loaded = {s.skill for s in plan}
    extra = [s for s in catalog.skills.on_demand() if s not in loaded]
    lines.append("On demand (the agent lists them with `skills` and loads one with `load_skill`):")
    lines += _table([(s.ref, s.summary(), s.shown) for s in extra], "  ") if extra else ["  (none)"]
    return "\n".join(lines)


def _instructions_rows(catalog: Catalog) -> list[tuple[str, str, str]]:
    """The project's instructions files, which come before the skills: the root's, read by every
    agent, and those in subfolders, read by an agent whose write scope lies there."""
    if catalog.root is None:
        return []
    root = catalog.root
    rows: list[tuple[str, str, str]] = []
    for found in project_instructions(root):
        origin = "project instructions" + (" (cut to its start)" if found.cut else "")
        rows.append((found.path, origin, display_path(root / found.path)))
    for path in subfolder_instructions(root):
        origin = f"project instructions, if its write scope is in {path.rsplit('/', 1)[0]}/"
        rows.append((path, origin, display_path(root / path)))
    return rows
