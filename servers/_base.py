"""The one place the tool servers import the MCP SDK's server class, and their shared start-up.

Every tool server collects its tools in a :class:`ToolList`, builds an ``MCPServer`` through
:func:`new_server` and, when run as ``python -m dispatch.servers.NAME``, serves it over stdio
through :func:`serve_stdio`.

The hub builds a server per agent (its tools are bound to that agent's scope), so building must be
cheap: the SDK derives each tool's argument model and JSON schema with pydantic, about half a
millisecond per tool. :class:`ToolList` does that once per tool *function* (its code, name,
description and annotations) and gives each later server a copy bound to its own function.

A tool that takes no request context (it reports no progress and asks nothing back) can be called
on its server without a session (:meth:`ServerPlan.call`): the same argument validation, tool and
result as ``tools/call`` answers, without the JSON-RPC round trip and the session's per-request
machinery around it (the hub does so for the ``fs`` server's tools in its own process).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import CodeType
from typing import Any, ParamSpec, TypeVar
from weakref import WeakKeyDictionary

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from mcp_types import Tool as MCPTool

__all__ = [
    "MCPServer",
    "ServerPlan",
    "ToolError",
    "ToolList",
    "builds",
    "existing_root",
    "new_server",
    "root_argument",
    "serve_stdio",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_P = ParamSpec("_P")
_PrototypeKey = tuple[CodeType, str | None, str | None, str | None, bool | None]

_log = logging.getLogger(__name__)
_idle_contexts: WeakKeyDictionary[MCPServer, Context[Any, Any]] = WeakKeyDictionary()
"""Per server built for calls without a session, the request context its calls are given: made
once (the SDK makes one per call otherwise), never read by a tool that takes none."""

_PROTOTYPES: dict[_PrototypeKey, Tool] = {}
"""A memo, not state: the tool the SDK derived from a function's code and options, as a template."""


def _code(fn: Callable[..., Any]) -> CodeType:
    function = getattr(fn, "__func__", fn)  # a bound method's function
    code = getattr(function, "__code__", None)
    if not isinstance(code, CodeType):
        raise TypeError(f"{fn!r} is not a Python function; a tool must be one")
    return code


class ToolList:
    """The tools of one server being built; each registered function becomes a tool the way the
    SDK's ``MCPServer.add_tool`` makes it, from a prototype derived once per function code."""

    def __init__(self) -> None:
        self.tools: list[Tool] = []

    def add(
        self,
        fn: _F,
        *,
        name: str | None = None,
        description: str | None = None,
        annotations: ToolAnnotations | None = None,
        structured_output: bool | None = False,
    ) -> _F:
        """Register ``fn`` (usable as a bare decorator); returns it unchanged.

        Tools answer in text by default (what the model reads): with ``structured_output`` the SDK
        adds an output schema, and every client session compiles it and checks each result."""
        shape = annotations.model_dump_json() if annotations is not None else None
        key: _PrototypeKey = (_code(fn), name, description, shape, structured_output)
        prototype = _PROTOTYPES.get(key)
        if prototype is None:
            prototype = Tool.from_function(
                fn, name=name, description=description, annotations=annotations, structured_output=structured_output
            )
            _PROTOTYPES[key] = prototype
        self.tools.append(prototype.model_copy(update={"fn": fn}))
        return fn


def new_server(name: str, instructions: str, tools: ToolList | None = None) -> MCPServer:
    """A quiet ``MCPServer`` (the SDK logs every request at INFO otherwise) offering ``tools``."""
    listed = tools.tools if tools is not None else None
    return MCPServer(name, instructions=instructions, log_level="WARNING", tools=listed)


@dataclass(frozen=True)
class ServerPlan:
    """A tool server not built yet: its tools, bound and listable, and what :meth:`build` makes.

    The hub mounts an agent's in-process servers as plans: the model sees their tools at once,
    and a server is built (an ``MCPServer`` costs a few tenths of a millisecond) only when the
    agent first calls one of its tools."""

    name: str
    instructions: str
    tools: ToolList

    def listed(self) -> list[MCPTool]:
        """The tools as ``tools/list`` answers them (what ``MCPServer.list_tools`` gives)."""
        return [
            MCPTool(
                name=tool.name,
                title=tool.title,
                description=tool.description,
                input_schema=tool.parameters,
                output_schema=tool.output_schema,
                annotations=tool.annotations,
                icons=tool.icons,
                _meta=tool.meta,
            )
            for tool in self.tools.tools
        ]

    def build(self) -> MCPServer:
        return new_server(self.name, self.instructions, self.tools)

    @cached_property
    def _contextless(self) -> frozenset[str]:
        return frozenset(tool.name for tool in self.tools.tools if tool.context_kwarg is None)

    def calls_without_session(self, name: str) -> bool:
        """Whether the tool ``name`` takes no request context, so :meth:`call` may run it."""
        return name in self._contextless

    async def call(self, server: MCPServer, name: str, arguments: dict[str, Any]) -> CallToolResult:
        """Call the tool ``name`` (one :meth:`calls_without_session` allows) on ``server`` (this
        plan, built) as ``tools/call`` would: a failure is an error result with its text, as the
        SDK's handler answers one; an unexpected one is logged with its traceback there too."""
        context = _idle_contexts.get(server)
        if context is None:
            context = _idle_contexts[server] = Context(mcp_server=server)
        try:
            result = await server.call_tool(name, arguments, context)
        except MCPError:
            raise
        except Exception as error:
            if not isinstance(error, ToolError) or isinstance(error, UnexpectedToolError):
                _log.exception("Tool %r raised an unexpected exception", name)
            return CallToolResult(content=[TextContent(type="text", text=str(error))], is_error=True)
        if not isinstance(result, CallToolResult):
            raise MCPError(code=-32603, message=f"tool {name!r} asked for input, which it cannot be given here")
        return result


def builds(plan: Callable[_P, ServerPlan]) -> Callable[_P, MCPServer]:
    """A server module's ``build_server``: its ``plan_server``, built."""

    def build(*args: _P.args, **kwargs: _P.kwargs) -> MCPServer:
        return plan(*args, **kwargs).build()

    build.__doc__ = plan.__doc__
    return build


def root_argument(parser: argparse.ArgumentParser) -> None:
    """Add the ``--root DIR`` option every file-touching server takes."""
    parser.add_argument("--root", required=True, type=Path, help="the project root the tools are scoped to")


def existing_root(parser: argparse.ArgumentParser, root: Path) -> Path:
    """The root as an absolute real path, or a usage error naming it."""
    if not root.is_dir():
        parser.error(f"--root {root}: not a directory")
    return root.resolve()


def serve_stdio(server: MCPServer) -> None:
    """Serve ``server`` over stdin/stdout until the client closes the pipe."""
    logging.basicConfig(level=logging.WARNING)
    server.run("stdio")
