"""What an agent is before it runs: :class:`AgentSpec` (task, model, grants, scope, skills,
checkpoints, limits), :class:`AgentState` (every state an agent can be in), and the built-in
instructions of workers and orchestrators. Reading a spec loads neither the loop nor the tool
servers; the loop is :mod:`dispatch.hub.agents.loop`.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from dispatch.hub.config.skills import LoadedSkill, render_skills
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
    "non-overlapping write scopes, wait for their reports, and combine them in your own report."
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
    budget_usd: float | None = Field(
        default=None, gt=0, description="the most this agent and its descendants may spend, in US dollars"
    )
    max_tokens: int | None = Field(
        default=None,
        gt=0,
        description="the most tokens (in + out, prompt-cache reads left out) this agent and its descendants may use",
    )

    @property
    def scope(self) -> tuple[str, ...]:
        """The paths the agent may write."""
        return self.grants.write

    def system_prompt(self, skills: Sequence[LoadedSkill] = ()) -> str:
        """Dispatch's agent rules, then the instructions (template and parent), then the skills
        in loading order."""
        text = WORKER_INSTRUCTIONS
        if self.grants.summon:
            text += ORCHESTRATOR_INSTRUCTIONS
        parts = [text, (self.instructions or "").strip(), render_skills(skills)]
        return "\n\n".join(p for p in parts if p)


SETUP_FAILURE = "setup: "
"""How the reason of an agent failed by something the user fixes outside it begins (a missing key,
a config mistake): such an agent can be resumed once it is fixed."""


def resumable(state: str, reason: str) -> bool:
    """Whether an agent in ``state`` (for ``reason``) may go on from its last step: interrupted, or
    failed by a setup problem the user has since fixed (a key, the config)."""
    return state == AgentState.interrupted.value or (
        state == AgentState.failed.value and reason.startswith(SETUP_FAILURE)
    )
