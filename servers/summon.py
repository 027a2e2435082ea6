"""The ``summon`` tool server: how an agent becomes an orchestrator.

Mounted only when the agent's grants include ``summon``. It starts children through the agent's
:class:`~dispatch.servers.hublink.HubLink`, which refuses a child with more grants than its parent
or a write scope that overlaps a running sibling's. Blocking tools (``wait``, ``summon`` with
``wait``) return early when a message arrives for the calling agent; the children keep running.
"""

from __future__ import annotations

import json
from typing import Literal

from dispatch.servers._base import ServerPlan, ToolError, ToolList, builds
from dispatch.servers.hublink import (
    ChildInfo,
    GrantRequest,
    HubLink,
    LinkRefusal,
    MessageKind,
    SummonRequest,
    TemplateInfo,
    WaitOutcome,
)

MAX_WAIT_S = 24 * 3600.0
MAX_DIFF_CHARS = 20000


def _child_line(child: ChildInfo) -> dict[str, object]:
    line: dict[str, object] = {"id": child.id, "name": child.name, "state": child.state}
    if child.report is not None:
        line["report"] = child.report
    if child.changes is not None:
        line["changes"] = child.changes.model_dump()
    if child.merge is not None:
        line["merge"] = child.merge.model_dump(exclude_none=True)
    return line


def render_wait(outcome: WaitOutcome) -> str:
    """A wait's outcome as JSON the model can read: who finished with what, who still runs, why."""
    body: dict[str, object] = {
        "finished": [_child_line(c) for c in outcome.finished],
        "still_running": [_child_line(c) for c in outcome.pending],
    }
    if outcome.interrupted:
        body["note"] = (
            "A message arrived for you; it follows this result. The children above keep running; "
            "call wait again when you have read it."
        )
    elif outcome.timed_out:
        body["note"] = "Timed out; the children above keep running."
    return json.dumps(body, indent=1)


def render_templates(listed: list[TemplateInfo]) -> str:
    """Templates as the model reads them, one line each."""
    if not listed:
        return "No templates: summon children without one."
    return "\n".join(
        f"- {t.name}{' (detached)' if t.detached else ''}: {t.description} [tools: {t.tools}]"
        + (f" [caps: {t.caps}]" if t.caps else "")
        for t in listed
    )


def _check_timeout(timeout_s: float | None) -> None:
    if timeout_s is not None and not 0 < timeout_s <= MAX_WAIT_S:
        raise ToolError(f"timeout_s must be between 0 and {MAX_WAIT_S:.0f} seconds, got {timeout_s}")


def _add_templates_tool(tools: ToolList, link: HubLink) -> None:
    @tools.add
    async def templates() -> str:
        """The templates you may summon children with (`summon(template=NAME, ...)`): each is a
        role with its own instructions, tools, skills and caps. A template never gets more than you
        have; its budget comes out of what you have left."""
        return render_templates(link.templates())


def _add_compact_tool(tools: ToolList, link: HubLink) -> None:
    @tools.add
    async def compact_child(id: str) -> str:
        """Have one of your running children compact its context before its next model call: the
        older part of its transcript is summarised (it does so by itself near its model's window)."""
        try:
            child = await link.compact_child(id)
        except LinkRefusal as refusal:
            raise ToolError(str(refusal)) from refusal
        return json.dumps(_child_line(child))


def _add_changes_tool(tools: ToolList, link: HubLink) -> None:
    @tools.add
    async def child_changes(id: str, max_chars: int = MAX_DIFF_CHARS) -> str:
        """What one of your children (and its own children) changed in the project's files: each
        file with its status and line counts, and the unified diff (cut at max_chars)."""
        if max_chars < 1:
            raise ToolError("max_chars must be at least 1")
        try:
            found = await link.child_changes(id)
        except LinkRefusal as refusal:
            raise ToolError(str(refusal)) from refusal
        body = found.model_dump()
        if len(found.diff) > max_chars:
            body |= {"diff": found.diff[:max_chars], "truncated": True, "full_chars": len(found.diff)}
        return json.dumps(body, indent=1)


def plan_server(link: HubLink) -> ServerPlan:
    """The summon server for the agent ``link`` is bound to."""
    tools = ToolList()

    @tools.add
    async def summon(
        task: str,
        name: str | None = None,
        template: str | None = None,
        instructions: str | None = None,
        model: str | None = None,
        skills: list[str] | None = None,
        grants: GrantRequest | None = None,
        scope: list[str] | None = None,
        detached: bool = False,
        wait: bool = False,
        budget_usd: float | None = None,
        max_tokens: int | None = None,
        max_steps: int | None = None,
        isolation: Literal["worktree"] | None = None,
    ) -> str:
        """Start a child agent on `task`. `scope` lists the root-relative paths it may write
        (none: read-only); it must not overlap a running sibling's, and is checked where it
        resolves (symlinks followed). A scope path that does not exist yet is made when the child
        starts: an empty file if its name has a suffix (`hello.py`), else a folder. `template`
        gives it a role (instructions, tools, skills; see `templates`); `skills` adds skills by
        name (see your `skills` tool). `grants` narrows what it may do (shell, summon, lsp, web:
        true or a list of hosts, web_private, `read`: the only paths it may read besides its
        scope, max_depth); it can never exceed yours, nor its template's. With `wait`, returns
        the child's report when it finishes (or early if a message arrives for you); otherwise
        returns its id at once. `model` is a tag (heavy, medium, light, coding, ...) or
        a model name. `budget_usd` / `max_tokens` cap what the child and its own children may
        spend; they come out of what you have left. `max_steps` caps the child's own steps (model
        calls): it fails when it reaches them without a report. A template's caps apply too (the
        lower one). `isolation: "worktree"` (in a git repository) runs it in a git worktree of
        its own, from your files as they are: its scope may then overlap a running sibling's, and
        its changes are merged into your files when it reports; a conflict writes nothing and
        comes back with both versions of each file in its `merge`, for you to decide."""
        request = SummonRequest(
            task=task,
            name=name,
            template=template,
            instructions=instructions,
            model=model,
            skills=skills or [],
            grants=grants or GrantRequest(),
            scope=scope or [],
            detached=detached,
            budget_usd=budget_usd,
            max_tokens=max_tokens,
            max_steps=max_steps,
            isolation=isolation,
        )
        try:
            child_id = await link.summon(request)
            if not wait:
                return json.dumps({"id": child_id, "state": "started"})
            return render_wait(await link.wait_children([child_id], None))
        except LinkRefusal as refusal:
            raise ToolError(f"summon refused: {refusal}") from refusal

    @tools.add
    async def wait(ids: list[str] | None = None, timeout_s: float | None = None) -> str:
        """Wait for children (by id; all running ones when omitted) to finish and return their
        reports. Returns early, saying so, when a message arrives for you or timeout_s passes."""
        _check_timeout(timeout_s)
        try:
            return render_wait(await link.wait_children(ids or [], timeout_s))
        except LinkRefusal as refusal:
            raise ToolError(str(refusal)) from refusal

    @tools.add
    async def message_child(id: str, text: str, kind: MessageKind = MessageKind.instruction) -> str:
        """Send one of your children a message; it reads it after its next tool result."""
        if kind is MessageKind.report:
            raise ToolError(
                "kind 'report' is for children reporting to you; use instruction, correction, context or data"
            )
        try:
            message_id = await link.message_child(id, text, kind)
        except LinkRefusal as refusal:
            raise ToolError(str(refusal)) from refusal
        return json.dumps({"message_id": message_id, "to": id})

    @tools.add
    async def cancel_child(id: str) -> str:
        """Cancel one of your children and everything it started."""
        try:
            child = await link.cancel_child(id)
        except LinkRefusal as refusal:
            raise ToolError(str(refusal)) from refusal
        return json.dumps(_child_line(child))

    @tools.add
    async def children() -> str:
        """Your children with their states, scopes, reports so far and what they changed in files."""
        listed = await link.children()
        return json.dumps([c.model_dump(exclude_none=True) for c in listed], indent=1)

    _add_changes_tool(tools, link)
    _add_templates_tool(tools, link)
    _add_compact_tool(tools, link)
    return ServerPlan(
        "summon",
        "Start child agents for parts of your task, wait for their reports, message or cancel them. "
        "Give children running at the same time non-overlapping write scopes.",
        tools,
    )


build_server = builds(plan_server)
