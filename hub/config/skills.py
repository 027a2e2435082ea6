"""Skills: markdown files of instructions, found at two levels and loaded in a fixed order.

Levels: ``global`` (``~/.skills/``) and ``project`` (``<root>/.skills/``), each with ``default/``
(auto-loaded for every agent), ``project/`` (available, loaded on demand) and ``agents/``
(``<name>.txt`` lists the skills of a subagent of that name, ``<name>.o.txt`` of an orchestrator,
that is an agent with summon). Dispatch's own skills (the ``skills/`` folder) are the ``builtin``
level: available to every agent, loaded when a template or a request names them.

Loading order (:meth:`SkillIndex.plan`): global default, project default, the template's skills,
agent mappings (global, then project), then skills requested for this agent (by its parent, or
``--skill``); skills loaded later through the ``load_skill`` tool follow in the transcript. A skill
is loaded once, at its first place.

References: ``NAME`` (``.md`` optional) or ``global:NAME`` / ``project:NAME`` / ``builtin:NAME``.
The same name at both levels keeps both; a bare name is then ambiguous where it must be unique,
and the error lists both. A bare name in a mapping file means the mapping's own level first, so a
mapping is never ambiguous; a global or project name shadows a built-in one. Every mapping is
checked when the index is built: a missing skill is an error naming the mapping file and line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from dispatch.hub.config.files import display_path
from dispatch.hub.errors import ConfigError, UserError

SCOPES = ("global", "project", "builtin")
FOLDERS = ("default", "project")
ORCHESTRATOR_SUFFIX, SUBAGENT_SUFFIX = ".o.txt", ".txt"


@dataclass(frozen=True)
class Skill:
    """One skill file."""

    name: str
    scope: str
    folder: str
    """``default`` (auto-loaded), ``project`` (on demand), or ``builtin``."""
    source: Traversable = field(compare=False)
    shown: str = field(compare=False)

    @property
    def ref(self) -> str:
        return f"{self.scope}:{self.name}"

    def read(self) -> str:
        return self.source.read_text(encoding="utf-8").strip()

    def summary(self) -> str:
        """The first line of text, without markdown heading marks."""
        try:
            text = self.read()
        except OSError:
            return ""
        first = next((line for line in text.splitlines() if line.strip()), "")
        return first.lstrip("#").strip()


@dataclass(frozen=True)
class LoadedSkill:
    """A skill in an agent's loading order, and why it is there."""

    skill: Skill
    origin: str

    def render(self) -> str:
        return f"# Skill {self.skill.ref}\n\n{self.skill.read()}"


@dataclass(frozen=True)
class Mapping:
    """One ``agents/`` file: the skills it activates, each with its line number."""

    scope: str
    agent: str
    orchestrator: bool
    shown: str
    entries: tuple[tuple[int, Skill], ...]


def skills_home() -> Path:
    """``~/.skills``."""
    return Path.home() / ".skills"


def _markdown(folder: Traversable) -> list[Traversable]:
    if not folder.is_dir():
        return []
    return sorted((f for f in folder.iterdir() if f.is_file() and f.name.endswith(".md")), key=lambda f: f.name)


def _stem(name: str) -> str:
    return name[:-3] if name.endswith(".md") else name


def render_skills(loaded: Iterable[LoadedSkill]) -> str:
    """The skills as they follow the instructions in a system prompt."""
    return "\n\n".join(s.render() for s in loaded)


class SkillIndex:
    """Every skill and mapping one project's agents can use."""

    def __init__(self, skills: Sequence[Skill], mappings: Sequence[Mapping] = ()) -> None:
        self.skills = list(skills)
        self._by_key = {(s.scope, s.name): s for s in self.skills}
        self._mappings = {(m.scope, m.agent, m.orchestrator): m for m in mappings}

    @classmethod
    def builtin(cls) -> SkillIndex:
        """Dispatch's own skills only."""
        return cls(_builtin_skills())

    @classmethod
    def discover(cls, root: Path | None) -> SkillIndex:
        """Built-in, global (``~/.skills``) and, with a root, project (``<root>/.skills``) skills.

        Raises ConfigError for a name in both ``default/`` and ``project/`` of one level, and for
        a mapping line that names a missing skill (naming the file and line).
        """
        levels = [("global", skills_home())] + ([("project", root / ".skills")] if root is not None else [])
        skills = _builtin_skills()
        for scope, base in levels:
            found: dict[str, Skill] = {}
            for folder in FOLDERS:
                for file in _markdown(base / folder):
                    skill = Skill(_stem(file.name), scope, folder, file, display_path(str(file)))
                    if skill.name in found:
                        raise ConfigError(
                            f"skill {skill.name!r} is in both {found[skill.name].shown} and {skill.shown}; "
                            "a name may appear once per level: rename or remove one"
                        )
                    found[skill.name] = skill
            skills.extend(found.values())
        index = cls(skills)
        for scope, base in levels:
            agents = base / "agents"
            for mapping in index._read_mappings(scope, agents) if agents.is_dir() else ():
                index._mappings[(mapping.scope, mapping.agent, mapping.orchestrator)] = mapping
        return index

    def _read_mappings(self, scope: str, folder: Path) -> Iterable[Mapping]:
        for file in sorted(folder.iterdir()):
            if not file.is_file() or not file.name.endswith(SUBAGENT_SUFFIX):
                continue
            orchestrator = file.name.endswith(ORCHESTRATOR_SUFFIX)
            agent = file.name[: -len(ORCHESTRATOR_SUFFIX if orchestrator else SUBAGENT_SUFFIX)]
            shown = display_path(file)
            entries: list[tuple[int, Skill]] = []
            for number, raw in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
                line = raw.split("#", 1)[0].strip()
                if not line:
                    continue
                try:
                    entries.append((number, self.resolve(line, prefer=scope)))
                except UserError as error:
                    raise ConfigError(f"{shown} line {number}: {error}") from None
            yield Mapping(scope, agent, orchestrator, shown, tuple(entries))

    # ---- finding skills ------------------------------------------------------------------------

    def resolve(self, ref: str, *, prefer: str | None = None) -> Skill:
        """The skill a reference names. ``prefer`` (a mapping's level) settles a bare name.

        Raises UserError for an unknown or ambiguous name, listing what there is.
        """
        text = ref.strip()
        scope, sep, name = text.partition(":")
        if sep:
            if scope not in SCOPES:
                raise UserError(f"skill reference {ref!r}: expected the scope global:, project: or builtin:")
            skill = self._by_key.get((scope, _stem(name.strip())))
            if skill is None:
                raise UserError(f"no {scope} skill named {_stem(name.strip())!r}; {self._known()}")
            return skill
        name = _stem(text)
        order = [prefer, "global"] if prefer == "project" else [prefer] if prefer else []
        for scope in order:
            if (scope, name) in self._by_key:
                return self._by_key[(scope, name)]
        both = [self._by_key[(s, name)] for s in ("global", "project") if (s, name) in self._by_key]
        if len(both) > 1:
            listed = " and ".join(f"{s.ref} ({s.shown})" for s in both)
            raise UserError(f"skill name {name!r} is ambiguous: {listed}; write global:{name} or project:{name}")
        if not both and ("builtin", name) in self._by_key:
            return self._by_key[("builtin", name)]
        if not both:
            raise UserError(f"no skill named {name!r}; {self._known()}")
        return both[0]

    def _known(self) -> str:
        refs = [s.ref for s in self.skills]
        return "known skills: " + (", ".join(refs) if refs else "none")

    def defaults(self) -> list[Skill]:
        """The auto-loaded skills: global ``default/``, then project ``default/``."""
        return [s for scope in ("global", "project") for s in self.skills if s.scope == scope and s.folder == "default"]

    def on_demand(self) -> list[Skill]:
        """The skills an agent may load when it needs them: ``project/`` folders and built-ins."""
        return [s for s in self.skills if s.folder != "default"]

    def maps(self, agent: str) -> bool:
        """Whether any scope maps skills to agents of this name (``agents/NAME.txt`` or ``.o.txt``)."""
        return any(name == agent for _, name, _ in self._mappings)

    def mapping(self, scope: str, agent: str, orchestrator: bool) -> Mapping | None:
        return self._mappings.get((scope, agent, orchestrator))

    # ---- loading order -------------------------------------------------------------------------

    def plan(
        self,
        agent: str,
        *,
        orchestrator: bool,
        template: str | None = None,
        template_skills: Sequence[str] = (),
        requested: Sequence[str] = (),
    ) -> list[LoadedSkill]:
        """The skills an agent of this name loads, in loading order. Raises UserError for an
        unknown or ambiguous name in ``template_skills`` or ``requested``."""
        loaded: dict[Skill, LoadedSkill] = {}

        def add(skill: Skill, origin: str) -> None:
            loaded.setdefault(skill, LoadedSkill(skill, origin))

        for skill in self.defaults():
            add(skill, f"{skill.scope} default")
        for ref in template_skills:
            add(self.resolve(ref), f"template {template}")
        for scope in ("global", "project"):
            mapping = self.mapping(scope, agent, orchestrator)
            if mapping is None:
                continue
            for line, skill in mapping.entries:
                add(skill, f"{mapping.shown} line {line}")
        for ref in requested:
            add(self.resolve(ref), "requested")
        return list(loaded.values())


def _builtin_skills() -> list[Skill]:
    folder = files("dispatch.skills")
    return [Skill(_stem(f.name), "builtin", "builtin", f, f"builtin skills/{f.name}") for f in _markdown(folder)]
