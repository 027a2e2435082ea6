"""The ``mcp_servers`` config section: outside MCP servers the hub can mount for agents.

Its room: the section's model and its checks, nothing that starts a server. Each entry names one
server by the key it is given (``github:``) and says how to reach it: a stdio ``command`` (with
``args``, ``env`` and ``cwd``) or a streamable HTTP ``url`` (with ``headers``). ``${NAME}`` in any
of these is replaced from the environment when the config is read
(:func:`dispatch.hub.config.files.interpolate`), so an unset variable is an error naming the file,
the line and the field (``mcp_servers.github.env.GITHUB_TOKEN``). ``per_agent: true`` gives each
agent its own process or connection instead of the hub-wide one; ``timeout_s`` bounds each tool call.

A server's name is how templates (``tools: {github: true}``) and ``summon``
(``grants: {mcp_servers: {github: [get_issue]}}``) grant it, and the mount kind its tools come
from; it must not be a built-in server's name (:data:`dispatch.hub.policy.servers.BUILTIN_KINDS`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from dispatch.hub.policy.servers import BUILTIN_KINDS

__all__ = ["McpServerConfig", "McpServers", "check_server_name"]

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*$"


def check_server_name(name: str) -> str:
    """``name`` if it may name an outside server; ValueError saying why not."""
    if name in BUILTIN_KINDS:
        raise ValueError(
            f"{name!r} is the name of a built-in tool server ({', '.join(BUILTIN_KINDS)}); "
            "give the outside server another name"
        )
    return name


class McpServerConfig(BaseModel):
    """One outside MCP server: by stdio ``command`` or by streamable HTTP ``url`` (exactly one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str | None = Field(default=None, description="the program that serves MCP over stdio")
    args: list[str] = Field(default_factory=list[str], description="its arguments (stdio only)")
    env: dict[str, str] = Field(
        default_factory=dict[str, str],
        description="environment variables for it (stdio only), over the hub's environment without its "
        "credentials (as every process Dispatch starts gets it): secrets are passed on only when listed here",
    )
    cwd: str | None = Field(default=None, description="its working directory (stdio only); default: the hub's")
    url: str | None = Field(default=None, description="the streamable HTTP endpoint, e.g. https://host/mcp")
    headers: dict[str, str] = Field(
        default_factory=dict[str, str], description="HTTP headers sent with every request (http only)"
    )
    per_agent: bool = Field(
        default=False,
        description="one process (or connection) per agent; default: one per hub, shared by its agents",
    )
    timeout_s: float = Field(
        default=120,
        gt=0,
        description="seconds one tool call may take; a longer call is cancelled and the agent gets a tool error",
    )

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("expected either command (a stdio server) or url (a streamable HTTP server), not "
                             + ("both" if self.command is not None else "neither"))  # fmt: skip
        if self.url is not None:
            stray = [f for f in ("args", "env", "cwd") if getattr(self, f)]
            if stray:
                raise ValueError(f"{', '.join(stray)} apply to a stdio command; an http server takes url and headers")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url: expected an http:// or https:// address, got {self.url!r}")
        elif self.headers:
            raise ValueError("headers apply to an http server (url); a stdio command takes args, env and cwd")
        return self

    @property
    def transport(self) -> Literal["stdio", "http"]:
        """``stdio`` or ``http``."""
        return "stdio" if self.command is not None else "http"

    def address(self) -> str:
        """The command line or the URL, for messages (never the env or headers: they hold secrets)."""
        if self.url is not None:
            return self.url
        return " ".join([self.command or "", *self.args])


McpServers = dict[Annotated[str, Field(pattern=NAME_PATTERN), AfterValidator(check_server_name)], McpServerConfig]
"""The section: server name -> how to reach it."""
