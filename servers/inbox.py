"""The ``inbox`` tool server: an agent's channel to the user and its parent.

Mounted for every agent, built around a :class:`~dispatch.servers.hublink.HubLink` bound to that
agent. ``ask_user`` exists only for detached agents, which have their own conversation with the
user. ``skills`` and ``load_skill`` list and load the skills the agent may use on demand.
``save_artifact``, ``find_artifacts`` and ``read_artifact`` keep plans and findings for later agents.
Messages are also delivered without these tools: the hub drains the inbox into the transcript
after every tool result.
"""

from __future__ import annotations

import json

from dispatch.servers._base import ServerPlan, ToolError, ToolList, builds
from dispatch.servers.hublink import ArtifactInfo, HubLink, InboxMessage, LinkRefusal


def render_messages(messages: list[InboxMessage]) -> str:
    """Messages as the model reads them, oldest first."""
    return "\n\n".join(m.render() for m in messages)


def plan_server(link: HubLink, *, detached: bool = False) -> ServerPlan:
    """The inbox server for the agent ``link`` is bound to."""
    tools = ToolList()

    @tools.add
    async def check_messages() -> str:
        """Return (and mark as read) every message waiting for you: instructions, corrections,
        context or data from the user, and reports from your children."""
        messages = await link.take_messages()
        return render_messages(messages) if messages else "No new messages."

    @tools.add
    async def report_progress(text: str) -> str:
        """Tell the user and your parent how the work is going, in a sentence or two."""
        if not text.strip():
            raise ToolError("report_progress needs a non-empty text")
        await link.report_progress(text.strip())
        return "Progress noted."

    @tools.add
    async def skills() -> str:
        """List the skills you may load when your task needs them: instructions for a kind of
        work (how to review, a project's conventions). Load one with load_skill."""
        listed = link.skills()
        if not listed:
            return "No skills are available."
        return "\n".join(f"- {s.name}{' (loaded)' if s.loaded else ''}: {s.summary}" for s in listed)

    @tools.add
    async def load_skill(name: str) -> str:
        """Load a skill by name (as skills lists it, e.g. project:code-style; the bare name when it
        is unique) and return its text; follow it from now on."""
        try:
            skill = link.load_skill(name)
        except LinkRefusal as refusal:
            raise ToolError(str(refusal)) from refusal
        return skill.text if skill.text is not None else f"{skill.name} is loaded already; it is in your context."

    _add_artifact_tools(tools, link)
    if detached:

        @tools.add
        async def ask_user(question: str) -> str:
            """Ask the user a question in your own conversation with them and wait for the reply.
            Returns as soon as any message reaches you (the reply, or something else they sent)."""
            if not question.strip():
                raise ToolError("ask_user needs a non-empty question")
            replies = await link.ask_user(question.strip())
            return render_messages(replies)

    return ServerPlan(
        "inbox", "Messages from the user and your children reach you here and after every tool result.", tools
    )


build_server = builds(plan_server)


def _listing(found: list[ArtifactInfo]) -> str:
    rows = [
        {"id": a.id, "kind": a.kind, "title": a.title, "created_at": a.created_at, "excerpt": a.excerpt} for a in found
    ]
    return json.dumps(rows, indent=1)


def _add_artifact_tools(tools: ToolList, link: HubLink) -> None:
    @tools.add
    async def save_artifact(kind: str, title: str, content: str) -> str:
        """Save a document for later agents and the user: a plan, research findings, notes.
        `kind` is one word (plan, research, notes, ...); `title` says what it is about. Later
        agents find it with find_artifacts."""
        kind, title = kind.strip().lower(), title.strip()
        if not kind or not title or not content.strip():
            raise ToolError("save_artifact needs a non-empty kind, title and content")
        try:
            saved = await link.save_artifact(kind, title, content)
        except LinkRefusal as refusal:
            raise ToolError(str(refusal)) from refusal
        return json.dumps({"id": saved.id, "kind": saved.kind, "title": saved.title, "saved": True})

    @tools.add
    async def find_artifacts(query: str | None = None, kind: str | None = None, limit: int = 10) -> str:
        """Search the plans, research findings and notes agents saved before: by words in their
        title or content (best matches first), and/or by kind; newest first without a query.
        Read one in full with read_artifact."""
        if not 1 <= limit <= 50:
            raise ToolError(f"limit must be between 1 and 50, got {limit}")
        try:
            found = await link.find_artifacts(query or None, (kind or "").strip().lower() or None, limit)
        except LinkRefusal as refusal:
            raise ToolError(str(refusal)) from refusal
        return _listing(found) if found else "No artifacts match."

    @tools.add
    async def read_artifact(id: str) -> str:
        """The full text of one saved artifact, by the id find_artifacts gave."""
        try:
            found = await link.read_artifact(id.strip())
        except LinkRefusal as refusal:
            raise ToolError(str(refusal)) from refusal
        return f"# {found.title}\n[{found.kind} · {found.id} · {found.created_at}]\n\n{found.content or ''}"
