"""What an agent is before it runs: :class:`AgentSpec` (task, model, grants, scope, skills,
checkpoints, limits), :class:`Caps` (what it may spend and how many steps it may take, as a user,
a template or a parent asks), :class:`AgentState` (every state an agent can be in), and the
built-in instructions of workers and orchestrators. Reading a spec loads neither the loop nor the
tool servers; the loop is :mod:`dispatch.hub.agents.loop`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Literal, TypedDict, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from dispatch.hub.config.execution import Placement
from dispatch.hub.config.instructions import ProjectInstructions, render_instructions
from dispatch.hub.config.skills import LoadedSkill, render_skills
from dispatch.hub.errors import UserError
from dispatch.hub.policy.checkpoints import CheckpointMode, Checkpoints
from dispatch.hub.policy.grants import Grants

WORKER_INSTRUCTIONS = (
    "You are an agent in Dispatch, working on one task in a software project. Use your tools to do "
    "the work; paths are relative to the project root. Messages from the user or your parent may "
    "appear after a tool result: read them and follow them. When the task is done, answer without "
    "calling a tool: that answer is your report to whoever gave you the task, so make it complete "
    "and concise."
)


ORCHESTRATOR_INSTRUCTIONS = (
    " You can summon child agents for parts of the task. Give children that run at the same time "
    "non-overlapping write scopes (or summon them with isolation: worktree in a git repository), wait "
    "for their reports, and combine them in your own report."
)


class AgentState(StrEnum):
    pending = "pending"
    running = "running"
    waiting_key = "waiting_key"
    waiting_disk = "waiting_disk"
    """The data directory is full: the agent waits at its step boundary until a write succeeds."""
    waiting_user = "waiting_user"
    waiting_children = "waiting_children"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"
    interrupted = "interrupted"
    """Stopped by the hub (a shutdown, or a crash found on the next start) at its last persisted
    step: not running, and not terminal either, since ``resume`` continues it from there."""

    @property
    def terminal(self) -> bool:
        return self in (AgentState.done, AgentState.failed, AgentState.cancelled)


class AgentSpec(BaseModel):
    """Everything an agent is started from."""

    model_config = ConfigDict(extra="forbid")

    id: str
    parent_id: str | None = None
    name: str
    template: str | None = None
    task: str
    root: str | None = Field(
        default=None, description="the project root it works in (absolute; a child's is its parent's); None: the hub's"
    )
    instructions: str | None = Field(default=None, description="the role's instructions, after the built-in rules")
    skills: list[str] = Field(default_factory=list[str], description="skills asked for, after the automatic ones")
    model: str = Field(description="a tag (heavy, coding, ...) or a model name such as 'openai/gpt-4o-mini'")
    grants: Grants = Field(default_factory=Grants)
    detached: bool = False
    checkpoints: Checkpoints = Field(
        default_factory=dict[str, CheckpointMode], description="where it stops for approval, and how"
    )
    max_children: int = Field(default=8, ge=1, description="children running at once; more wait")
    isolated: bool = Field(default=False, description="run fs and shell as stdio subprocesses")
    isolation: Literal["worktree"] | None = Field(
        default=None, description="worktree: it runs in a git worktree of its own (root is there), merged back"
    )
    placement: Placement | None = Field(
        default=None, description="with execution.engine ray: what its tool host needs of a Ray node (its template's)"
    )
    budget_usd: float | None = Field(
        default=None, gt=0, description="the most this agent and its descendants may spend, in US dollars"
    )
    max_tokens: int | None = Field(
        default=None,
        gt=0,
        description="the most tokens (in + out, prompt-cache reads left out) this agent and its descendants may use",
    )
    max_steps: int | None = Field(
        default=None, gt=0, description="the most steps (model calls) it may take; the hub's limits.max_steps too"
    )

    @property
    def caps(self) -> Caps:
        return Caps(self.budget_usd, self.max_tokens, self.max_steps)

    @property
    def scope(self) -> tuple[str, ...]:
        """The paths the agent may write."""
        return self.grants.write

    def system_prompt(self, skills: Sequence[LoadedSkill] = (), project: Sequence[ProjectInstructions] = ()) -> str:
        """Dispatch's agent rules, then the project's instructions files (AGENTS.md, CLAUDE.md),
        then the instructions (template and parent), then the skills in loading order."""
        text = WORKER_INSTRUCTIONS
        if self.grants.summon:
            text += ORCHESTRATOR_INSTRUCTIONS
        parts = [text, render_instructions(project), (self.instructions or "").strip(), render_skills(skills)]
        return "\n\n".join(p for p in parts if p)


N = TypeVar("N", int, float)

_EXPECTED = {
    "budget_usd": "a positive number of US dollars",
    "max_tokens": "a positive whole number of tokens",
    "max_steps": "a positive whole number of steps",
}
CAP_MAX = 2**63 - 1
"""The largest cap (SQLite's largest integer: caps are stored with their agents and chats)."""


class CapFields(TypedDict):
    """:class:`Caps` as the fields of a spec, a view or a chat's row."""

    budget_usd: float | None
    max_tokens: int | None
    max_steps: int | None


@dataclass(frozen=True)
class Caps:
    """What an agent may use before it is stopped (None: no cap of its own).

    ``budget_usd`` and ``max_tokens`` cover the agent *and its descendants* (tree budgets,
    :mod:`dispatch.hub.agents.budgets`: it fails with reason ``budget``); ``max_steps`` counts the
    agent's own model calls (the hub's ``limits.max_steps`` applies too, the lower one wins:
    :class:`~dispatch.hub.agents.limits.StepCaps`). They come from a template's fields, from the
    user for a top agent (``dispatch run --budget``, a request's ``budget_usd``, a chat's), which
    replace the template's, or from ``summon`` for a child, which may only lower them.
    """

    budget_usd: float | None = None
    max_tokens: int | None = None
    max_steps: int | None = None

    def check(self, names: Mapping[str, str] | None = None) -> Caps:
        """Itself, or UserError in one line naming the first field that is not a positive number
        (``names`` maps a field to what the caller calls it, e.g. ``budget_usd`` -> ``--budget``)."""
        for spot in fields(self):
            value: object = getattr(self, spot.name)
            kind = float if spot.name == "budget_usd" else int  # dollars may be whole too
            if value is None or (
                isinstance(value, kind | int)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and 0 < value <= CAP_MAX
            ):
                continue
            name = (names or {}).get(spot.name, spot.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > CAP_MAX:
                raise UserError(f"{name}: expected at most {CAP_MAX}, got {value!r}")
            raise UserError(f"{name}: expected {_EXPECTED[spot.name]}, got {value!r}")
        return self

    def over(self, base: Caps) -> Caps:
        """These caps where set, else ``base``'s (a user's over a template's)."""
        return Caps(
            base.budget_usd if self.budget_usd is None else self.budget_usd,
            base.max_tokens if self.max_tokens is None else self.max_tokens,
            base.max_steps if self.max_steps is None else self.max_steps,
        )

    def within(self, base: Caps) -> Caps:
        """Each cap the lower of these and ``base``'s (a summon's request under a template's)."""
        return Caps(
            _lower(self.budget_usd, base.budget_usd),
            _lower(self.max_tokens, base.max_tokens),
            _lower(self.max_steps, base.max_steps),
        )

    def summary(self) -> str:
        """``$2, 10000 tokens, 50 steps``: those set; '' for none."""
        parts = [f"${self.budget_usd:g}"] if self.budget_usd is not None else []
        parts += [f"{self.max_tokens} tokens"] if self.max_tokens is not None else []
        parts += [f"{self.max_steps} steps"] if self.max_steps is not None else []
        return ", ".join(parts)

    def spec_fields(self) -> CapFields:
        """As the fields of a spec, a view or a chat's row."""
        return {"budget_usd": self.budget_usd, "max_tokens": self.max_tokens, "max_steps": self.max_steps}


NO_CAPS = Caps()
"""No caps of one's own (the template's apply)."""


def _lower(one: N | None, other: N | None) -> N | None:
    if one is None:
        return other
    return one if other is None else min(one, other)


SETUP_FAILURE = "setup: "
"""How the reason of an agent failed by something the user fixes outside it begins (a missing key,
a config mistake): such an agent can be resumed once it is fixed."""


def resumable(state: str, reason: str) -> bool:
    """Whether an agent in ``state`` (for ``reason``) may go on from its last step: interrupted, or
    failed by a setup problem the user has since fixed (a key, the config)."""
    return state == AgentState.interrupted.value or (
        state == AgentState.failed.value and reason.startswith(SETUP_FAILURE)
    )
