"""Checkpoints: where an agent stops for the user's approval, and how each one is set.

Four checkpoints, each named two ways (templates may use either spelling)::

    before_report       plan, report   the final answer waits (e.g. approve a plan)
    before_write        edit           fs write_file / edit_file waits
    before_destructive  destructive    shell commands that delete or discard (rm, git reset --hard,
                                       git clean, ...) and changing many existing files wait
    before_merge        merge          an isolated child's work (its whole diff) waits before it is
                                       merged into its parent's files; denied: discarded

Each is ``ask`` (wait for the user), ``off``, or ``auto_approve`` after a timeout. In a template::

    checkpoints: [report]                   # a list: each one "ask"
    checkpoints:                            # a mapping: one mode each
      report: ask
      edit: off                             # (YAML reads off as false; both mean off)
      destructive: {auto_approve: 10m}      # or the string "auto_approve 10m"

The hub enforces them (:mod:`dispatch.hub.service.approvals`), never the model. :func:`destructive_command`
says whether a shell command is destructive, and why.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from dispatch.hub.policy.servers import FS, SHELL

CheckpointName = Literal["before_report", "before_write", "before_destructive", "before_merge"]
ALIASES: dict[str, CheckpointName] = {
    "before_report": "before_report",
    "plan": "before_report",
    "report": "before_report",
    "before_write": "before_write",
    "edit": "before_write",
    "before_destructive": "before_destructive",
    "destructive": "before_destructive",
    "before_merge": "before_merge",
    "merge": "before_merge",
}
MANY_FILES = 5
"""Changing this many distinct existing files (since the last approval) is destructive."""
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_AUTO = re.compile(r"^auto_approve\s*[:= ]\s*(.+)$")


def duration_s(value: object) -> float:
    """``10m``, ``1s``, ``1.5h``, ``250ms`` or a number of seconds; ValueError otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = _DURATION.match(str(value).strip()) if isinstance(value, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"expected a positive duration such as 10m, 30s or 1h, got {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


class CheckpointMode(BaseModel):
    """How one checkpoint behaves: ``ask``, ``off``, or ``auto_approve`` after ``after_s`` seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["ask", "off", "auto_approve"] = "ask"
    after_s: float | None = Field(default=None, gt=0, description="auto_approve: seconds the user has to answer")

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: object) -> object:
        if value is None or value is True:
            return {"mode": "ask"}
        if value is False:
            return {"mode": "off"}
        if isinstance(value, str):
            text = value.strip()
            auto = _AUTO.match(text)
            if auto is not None:
                return {"mode": "auto_approve", "after_s": duration_s(auto.group(1).strip())}
            if text in ("ask", "off"):
                return {"mode": text}
            raise ValueError(f"expected ask, off or 'auto_approve DURATION' (e.g. auto_approve 10m), got {value!r}")
        given = cast(Mapping[str, Any], value) if isinstance(value, Mapping) else None
        if given is not None and list(given) == ["auto_approve"]:
            return {"mode": "auto_approve", "after_s": duration_s(given["auto_approve"])}
        return cast(object, value)

    @model_validator(mode="after")
    def _timeout_only_for_auto(self) -> CheckpointMode:
        if (self.mode == "auto_approve") != (self.after_s is not None):
            raise ValueError("auto_approve needs a duration (auto_approve: 10m); ask and off take none")
        return self

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def __str__(self) -> str:
        return f"auto_approve {self.after_s:g}s" if self.mode == "auto_approve" else self.mode


def _names(value: object) -> dict[Any, Any]:
    """A list of names (each ``ask``) or a mapping of name to mode; names in either spelling, once."""
    if value is None:
        return {}
    if isinstance(value, list | tuple):
        value = dict.fromkeys(cast(list[Any], value), "ask")
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a list of checkpoint names or a mapping of name to mode, got {value!r}")
    given = dict(cast(Mapping[Any, Any], value))
    seen: dict[str, str] = {}
    for name in given:
        canonical = ALIASES.get(str(name))
        if canonical is None:
            raise ValueError(f"unknown checkpoint {name!r}; expected one of: {', '.join(ALIASES)}")
        if canonical in seen:
            raise ValueError(f"checkpoint {canonical} is given twice (as {seen[canonical]!r} and {name!r})")
        seen[canonical] = str(name)
    return given


def _canonical(value: dict[str, CheckpointMode]) -> dict[str, CheckpointMode]:
    return {ALIASES[name]: mode for name, mode in value.items()}


Checkpoints = Annotated[dict[str, CheckpointMode], BeforeValidator(_names), AfterValidator(_canonical)]
"""Checkpoint modes by canonical name (:data:`CheckpointName`); a checkpoint left out is off. Modes
are validated under the name as written, so an error points at the user's own line."""


# ---- destructive shell commands -------------------------------------------------------------------

_SEGMENTS = re.compile(r"\|\||&&|[;|&\n]|\$\(|`|\(|\)")
_PREFIXES = {"sudo", "command", "exec", "nice", "nohup", "time", "env", "xargs", "doas"}
_DELETERS = {"rm", "unlink", "rmdir", "shred", "wipefs", "srm"}
_SHELLS = {"sh", "bash", "zsh", "dash"}


def _words(segment: str) -> list[str]:
    try:
        return shlex.split(segment)
    except ValueError:
        return segment.split()


def _git(args: list[str]) -> str | None:
    rest = list(args)
    while rest and rest[0].startswith("-"):  # git -C dir -c k=v ...
        rest = rest[2:] if rest[0] in ("-C", "-c") else rest[1:]
    if not rest:
        return None
    sub, opts = rest[0], rest[1:]
    given = set(opts)
    found = {
        "reset": "--hard" in given,
        "clean": not given & {"-n", "--dry-run"},
        "checkout": bool(given & {"--", ".", "-f", "--force"}),
        "restore": not given & {"--staged", "-S"} or bool(given & {"--worktree", "-W"}),
        "push": any(o.startswith(("--force", "+")) or o == "-f" for o in opts),
        "branch": "-D" in given or bool(given & {"-d", "--delete"} and given & {"-f", "--force"}),
        "stash": bool(opts) and opts[0] in ("drop", "clear"),
    }.get(sub, False)
    return f"git {sub} {' '.join(opts)}".strip() if found else None


def _segment(words: list[str]) -> str | None:
    while words and (words[0] in _PREFIXES or "=" in words[0] or words[0].startswith("-")):
        words = words[1:]  # sudo, env A=1, xargs -0 ...: the command comes after them
    if not words:
        return None
    program, args = words[0].rsplit("/", 1)[-1], words[1:]
    if program in _DELETERS or program.startswith("mkfs"):
        return f"{program} deletes files"
    if program == "git":
        return _git(args)
    if program == "find" and ("-delete" in args or (any(a in ("-exec", "-execdir") for a in args) and "rm" in args)):
        return "find deletes the files it finds"
    if program == "dd" and any(a.startswith("of=") for a in args):
        return "dd overwrites its output"
    if program == "truncate":
        return "truncate empties files"
    if program in _SHELLS and "-c" in args and args.index("-c") + 1 < len(args):
        return destructive_command(args[args.index("-c") + 1])
    return None


def destructive_command(command: str) -> str | None:
    """Why the shell command is destructive (it deletes files or discards work), or None."""
    for segment in _SEGMENTS.split(command):
        found = _segment(_words(segment))
        if found is not None:
            return found
    return None


# ---- which checkpoint holds a tool call -------------------------------------------------------------


def _change(name: str, arguments: Mapping[str, Any]) -> str:
    """What an fs write is, in one line (the approval's ``diff`` shows what it changes)."""
    path = str(arguments.get("path", ""))
    if name == "edit_file":
        return f"edit_file {path}"
    return f"write_file {path} ({len(str(arguments.get('content', '')))} characters)"


class ToolCheckpoints:
    """Which checkpoint, if any, holds a tool call, and what the approval shows: a destructive
    shell ``run`` (:func:`destructive_command`) or a change to the :data:`MANY_FILES`-th existing
    file since the agent's last ``before_destructive`` approval holds at ``before_destructive``;
    any other fs write or edit at ``before_write``. What it shows of an fs write is one line; the
    hub adds the write's diff (:mod:`dispatch.hub.changes.proposed`). Counts each agent's changed files."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._changed: dict[str, set[str]] = {}

    def held(
        self, agent_id: str, enabled: Set[str], kind: str, name: str, arguments: Mapping[str, Any]
    ) -> tuple[CheckpointName, str] | None:
        """``(checkpoint, what it shows)`` among the ``enabled`` checkpoints, or None."""
        if kind == SHELL.name and name == "run":
            command = str(arguments.get("command", ""))
            why = destructive_command(command)
            if why is not None and "before_destructive" in enabled:
                return "before_destructive", f"run: {command}\n({why})"
            return None
        if kind != FS.name or name not in FS.write_tools:
            return None
        shown = _change(name, arguments)
        if "before_destructive" in enabled and self._many(agent_id, str(arguments.get("path", ""))):
            files = sorted(self._changed[agent_id])
            return "before_destructive", f"{shown}\n\nIt changes {len(files)} existing files: {', '.join(files)}"
        return ("before_write", shown) if "before_write" in enabled else None

    def _many(self, agent_id: str, path: str) -> bool:
        try:
            target = (self._root / path).resolve()
        except (OSError, ValueError):
            return False
        if not path or not target.is_file():
            return False
        changed = self._changed.setdefault(agent_id, set())
        changed.add(str(target.relative_to(self._root)) if target.is_relative_to(self._root) else str(target))
        return len(changed) >= MANY_FILES

    def approved(self, agent_id: str) -> None:
        """A ``before_destructive`` approval: count the agent's changed files from zero again."""
        self._changed.pop(agent_id, None)
