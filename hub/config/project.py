"""The config files: global ``~/.config/dispatch/config.yaml`` and the project's
``<root>/.dispatch/config.yaml``, merged field by field (the project wins), ``${ENV}`` interpolated,
validated with pydantic. Every error names the file, the line, the field path and the expectation.

Sections: ``permissions`` (here), ``hooks`` (owned by ``dispatch.hub.config.hooks``), ``models``
(owned by ``dispatch.hub.llm``), ``lsp`` (owned by ``dispatch.servers.lsp``), ``web`` (owned by
``dispatch.servers.web.search``) and ``execution`` (:mod:`dispatch.hub.config.execution`); each
section's owner defines its model. Templates live in their own files
(:mod:`dispatch.hub.config.templates`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dispatch.hub.config.execution import ExecutionConfig
from dispatch.hub.config.files import Loc, Source, interpolate, merge, validate
from dispatch.hub.config.hooks import HooksConfig
from dispatch.hub.config.outside import McpServers
from dispatch.hub.llm.models_config import ModelsConfig
from dispatch.servers.lsp.settings import LspSettings
from dispatch.servers.web.search import WebConfig

CONFIG_NAME = "config.yaml"
UNION_FIELDS: frozenset[Loc] = frozenset({("permissions", "auto_allow")})
"""Lists that both files add to, rather than the project's replacing the global one's."""


def global_dir() -> Path:
    """``~/.config/dispatch``: the global config file and the user's templates."""
    return Path.home() / ".config" / "dispatch"


def project_dir(root: Path) -> Path:
    """``<root>/.dispatch``: the project's config file and templates."""
    return root / ".dispatch"


class ProcessesConfig(BaseModel):
    """The config's ``limits.processes``: how many processes shell commands may have at once,
    each limit inside the one before (pids cgroups, where the hub can make them)."""

    model_config = ConfigDict(extra="forbid")

    total: int = Field(default=1024, ge=1, description="every command of the hub together")
    agent: int = Field(default=512, ge=1, description="the commands of one agent together")
    command: int = Field(default=256, ge=1, description="one command")


class LimitsConfig(BaseModel):
    """The config's ``limits`` section."""

    model_config = ConfigDict(extra="forbid")

    running_agents: int = Field(
        default=256,
        ge=1,
        description="agents taking steps at once (waiting on children, the user or a key does not count); "
        "more wait as pending",
    )
    model_calls: int = Field(default=64, ge=1, description="model calls in flight at once, across every key; more wait")
    model_workers: int | None = Field(
        default=None,
        ge=1,
        description="model worker processes (where litellm runs), calls spread across them; default: the "
        "number of cores",
    )
    max_steps: int = Field(
        default=500,
        ge=1,
        description="steps (model calls) one agent may take; an agent still going after that many fails, "
        "saying so (a model caught in a loop stops)",
    )
    tool_calls_per_step: int = Field(
        default=64,
        ge=1,
        description="tool calls one model answer may make; the calls beyond it are not run and each gets a "
        "tool error saying so",
    )
    processes: ProcessesConfig = Field(
        default_factory=ProcessesConfig,
        description="processes of shell commands at once: the hub's (total), one agent's (agent), one "
        "command's (command); a fork past any of them fails",
    )
    commands_per_agent: int = Field(
        default=4, ge=1, description="shell commands of one agent running at once; more wait their turn"
    )


class Permissions(BaseModel):
    """Paths outside the project root that agents may use without asking the user."""

    model_config = ConfigDict(extra="forbid")

    auto_allow: list[str] = Field(
        default_factory=list[str],
        description="directories pre-approved for read, write and execute (e.g. /tmp, ~/.config/dispatch); "
        "the global and project lists add up",
    )


class DispatchConfig(BaseModel):
    """One Dispatch config file, or the merge of the global and the project one."""

    model_config = ConfigDict(extra="forbid")

    permissions: Permissions = Field(
        default_factory=Permissions, description="paths outside the project root agents may use without asking"
    )
    models: ModelsConfig = Field(
        default_factory=ModelsConfig,
        description="API keys, their budgets and models with tags, and the fallback order "
        "(dispatch.hub.llm.models_config owns this section)",
    )
    lsp: LspSettings = Field(
        default_factory=LspSettings,
        description="language servers per language: true (detect), false (off), or a command, "
        "initialization options and settings that override detection",
    )
    sandbox: Literal["auto", "landlock", "off"] = Field(
        default="auto",
        description="auto: shell commands run in bubblewrap (with Landlock inside), and the shell is disabled "
        "where bubblewrap is not usable; landlock: Landlock alone, a weaker sandbox (dispatch doctor says what "
        "it loses); off: no sandbox, and the user approves every command first",
    )
    limits: LimitsConfig = Field(
        default_factory=LimitsConfig,
        description="caps that protect the machine: agents taking steps at once (running_agents) and model calls "
        "in flight (model_calls), more wait, visible in GET /api/limits; steps per agent (max_steps), tool "
        "calls per step (tool_calls_per_step), processes of shell commands (processes) and commands of "
        "an agent at once (commands_per_agent)",
    )
    web: WebConfig = Field(
        default_factory=WebConfig,
        description="the web server: search provider (web.search) and private addresses for the top agent "
        "(web.allow_private)",
    )

    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig,
        description="where agents' tool servers run: engine local (the hub's process) or ray (a Ray actor per "
        "agent on a node Ray chooses; address, resources, runtime_env) (dispatch.hub.config.execution owns this "
        "section)",
    )

    mcp_servers: McpServers = Field(
        default_factory=McpServers,
        description="outside MCP servers agents may be granted, by name: a stdio command (command, args, env, cwd) "
        "or a streamable HTTP url (headers); per_agent: true for one process per agent "
        "(dispatch.hub.config.outside owns this section)",
    )
    hooks: HooksConfig = Field(
        default_factory=HooksConfig,
        description="commands run at agents' tool calls, user messages and reports, in Claude Code's shape: "
        "per event (PreToolUse, PostToolUse, UserPromptSubmit, Stop, SubagentStop), a list of {matcher, hooks: "
        "[{type: command, command, timeout}]} (dispatch.hub.config.hooks owns this section)",
    )


@dataclass(frozen=True)
class LoadedConfig:
    """The merged config and the files it came from (missing files are not listed)."""

    config: DispatchConfig
    files: tuple[str, ...]


def config_paths(root: Path) -> list[Path]:
    """The config files in the order they are applied: global, then project."""
    return [global_dir() / CONFIG_NAME, project_dir(root) / CONFIG_NAME]


def load_config(root: Path) -> LoadedConfig:
    """Read, interpolate, validate and merge the config files that exist (either may be absent).

    The merge is validated as a whole (so a project file may override part of a section), and
    each problem is blamed on the file its field came from.
    """
    sources: list[Source] = []
    layers: list[dict[str, Any]] = []
    for path in config_paths(root):
        if not path.is_file():
            continue
        source = Source.read(path)
        layers.append(interpolate(source.data, source))
        sources.append(source)
    merged, owners = merge(layers, UNION_FIELDS)
    config = validate(DispatchConfig, merged, sources or [Source("(defaults)", {})], owners)
    return LoadedConfig(config, tuple(s.path for s in sources))
