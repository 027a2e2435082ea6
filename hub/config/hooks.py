"""The config's ``hooks`` section, in Claude Code's shape, so existing hook scripts work:

    hooks:
      PreToolUse:
        - matcher: "write_file|edit_file"     # a regular expression; "" or "*": every tool
          hooks:
            - {type: command, command: ./scripts/check-write.sh, timeout: 30}

Events: ``PreToolUse``, ``PostToolUse`` (matched on the tool's name, plain ``write_file`` or
server-qualified ``fs__write_file``), ``UserPromptSubmit``, ``Stop`` and ``SubagentStop`` (no
matcher needed). Running them is :mod:`dispatch.hub.mounts.hooks`'s job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

HookEvent = Literal["PreToolUse", "PostToolUse", "UserPromptSubmit", "Stop", "SubagentStop"]
EVENTS: tuple[HookEvent, ...] = get_args(HookEvent)
DEFAULT_TIMEOUT_S = 60.0


class HookCommand(BaseModel):
    """One command a hook runs."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["command"] = Field(description="command (the only kind)")
    command: str = Field(min_length=1, description="a shell command, run with sh -c in the project root")
    timeout: float = Field(
        default=DEFAULT_TIMEOUT_S, gt=0, description="seconds before it is killed (and reported, and ignored)"
    )


class HookMatcher(BaseModel):
    """Commands run for the tools (or events) a pattern matches."""

    model_config = ConfigDict(extra="forbid")

    matcher: str = Field(
        default="",
        description="a regular expression the whole tool name must match, plain (write_file) or server-qualified "
        "(fs__write_file); '' or '*': every tool; ignored for the events that are not about a tool",
    )
    hooks: list[HookCommand] = Field(description="the commands, run side by side")

    @field_validator("matcher")
    @classmethod
    def _compiles(cls, value: str) -> str:
        if value not in ("", "*"):
            try:
                re.compile(value)
            except re.error as error:
                raise ValueError(f"expected a regular expression: {error}") from None
        return value

    def matches(self, names: Iterable[str]) -> bool:
        """Whether the pattern matches one of ``names`` whole (no names: an event about no tool)."""
        listed = list(names)
        if self.matcher in ("", "*") or not listed:
            return True
        return any(re.fullmatch(self.matcher, name) for name in listed)


class HooksConfig(BaseModel):
    """The config's ``hooks``: per event, the matchers and their commands."""

    model_config = ConfigDict(extra="forbid")

    PreToolUse: list[HookMatcher] = Field(
        default_factory=list[HookMatcher], description="before a tool call; exit 2 blocks it"
    )
    PostToolUse: list[HookMatcher] = Field(
        default_factory=list[HookMatcher], description="after a tool call, with its result"
    )
    UserPromptSubmit: list[HookMatcher] = Field(
        default_factory=list[HookMatcher], description="when the user's task or message reaches an agent"
    )
    Stop: list[HookMatcher] = Field(default_factory=list[HookMatcher], description="when a top agent would report")
    SubagentStop: list[HookMatcher] = Field(
        default_factory=list[HookMatcher], description="when a child agent would report"
    )

    @property
    def configured(self) -> bool:
        """Whether any event has a command."""
        return any(m.hooks for event in EVENTS for m in getattr(self, event))

    def commands(self, event: HookEvent, names: Iterable[str] = ()) -> list[HookCommand]:
        """The commands of ``event`` whose matcher matches one of ``names``, in config order."""
        listed = list(names)
        return [c for m in getattr(self, event) if isinstance(m, HookMatcher) and m.matches(listed) for c in m.hooks]
