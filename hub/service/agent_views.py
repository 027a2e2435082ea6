"""Agents as the interfaces see them: :class:`~dispatch.hub.views.AgentView` built from a live
agent of the tree or from its row in the store, each view's JSON kept until something it shows
changes (:class:`ViewJson`), and the usage ledger as a :class:`~dispatch.hub.views.UsageView`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from pydantic import TypeAdapter

from dispatch.hub.agents.loop import Agent
from dispatch.hub.agents.spec import AgentSpec, AgentState
from dispatch.hub.llm.ledger import usage_columns
from dispatch.hub.llm.types import Usage
from dispatch.hub.store.records import AgentRow
from dispatch.hub.views import AgentView, PlacementView, UsageFigures, UsageView


class LiveFacts(NamedTuple):
    """Everything a live agent's view shows, as one value: equal facts, equal view. Read in a few
    microseconds, where building the view takes ten times that."""

    spec: AgentSpec
    """Replaced, never changed in place (a model switch copies it)."""
    chat_id: str | None
    state: AgentState
    reason: str
    waiting_until: datetime | None
    tokens_in: int
    tokens_out: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    steps: int
    report: str | None
    error: str | None
    question: str | None
    compactions: int
    placement: PlacementView | None


def live_facts(
    agent: Agent, *, chat_id: str | None = None, question: str | None = None, placement: PlacementView | None = None
) -> LiveFacts:
    usage = agent.usage
    return LiveFacts(
        agent.spec,
        chat_id,
        agent.state,
        agent.reason,
        agent.waiting_until,
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.cost_usd,
        agent.steps_taken,
        agent.report,
        agent.error,
        question if agent.state is AgentState.waiting_user else None,
        agent.compaction.count if agent.compaction is not None else 0,
        placement,
    )


def live_view(
    agent: Agent, *, chat_id: str | None = None, question: str | None = None, placement: PlacementView | None = None
) -> AgentView:
    """A running (or finished, this session) agent of the tree; ``placement``: where its tool servers run."""
    return facts_view(live_facts(agent, chat_id=chat_id, question=question, placement=placement))


def facts_view(facts: LiveFacts) -> AgentView:
    spec = facts.spec
    return AgentView(
        id=spec.id,
        parent_id=spec.parent_id,
        chat_id=facts.chat_id,
        root=spec.root,
        name=spec.name,
        template=spec.template,
        task=spec.task,
        state=facts.state.value,
        reason=facts.reason,
        waiting_until=facts.waiting_until.isoformat() if facts.waiting_until is not None else None,
        model=spec.model,
        scope=list(spec.scope),
        detached=spec.detached,
        tokens_in=facts.tokens_in,
        tokens_out=facts.tokens_out,
        cache_read_tokens=facts.cache_read_tokens,
        cache_write_tokens=facts.cache_write_tokens,
        cost_usd=facts.cost_usd,
        steps=facts.steps,
        report=facts.report,
        error=facts.error,
        question=facts.question,
        compactions=facts.compactions,
        placement=facts.placement or PlacementView(),
        **spec.caps.spec_fields(),
    )


def stored_view(row: AgentRow) -> AgentView:
    """An agent of an earlier session (finished, or interrupted and not resumed yet)."""
    spec = row.spec
    return AgentView(
        id=row.id,
        parent_id=row.parent_id,
        chat_id=row.chat_id,
        root=row.root,
        name=spec.name,
        template=spec.template,
        task=spec.task,
        state=row.state,
        reason=row.reason,
        waiting_until=row.waiting_until,
        model=spec.model,
        scope=list(spec.scope),
        detached=spec.detached,
        tokens_in=row.tokens_in,
        tokens_out=row.tokens_out,
        cache_read_tokens=row.cache_read_tokens,
        cache_write_tokens=row.cache_write_tokens,
        cost_usd=row.cost_usd,
        steps=row.steps,
        report=row.report,
        error=row.error,
        question=row.question if row.state == AgentState.waiting_user.value else None,
        compactions=row.compactions,
        placement=PlacementView.model_validate_json(row.placement) if row.placement else PlacementView(),
        **spec.caps.spec_fields(),
    )


_VIEW_JSON = TypeAdapter(AgentView)


class ViewJson:
    """Each agent's view as JSON, kept with what it was built from (a live agent's
    :class:`LiveFacts`, a stored agent's row) and built again only when that changed: listing
    hundreds of agents, few of which changed since the last time, then costs a comparison each."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[object, bytes]] = {}

    def get(self, agent_id: str, source: object, build: Callable[[], AgentView]) -> bytes:
        """The JSON of ``agent_id``'s view as ``source`` says (``build`` makes it when not kept)."""
        kept = self._kept.get(agent_id)
        if kept is not None and kept[0] == source:
            return kept[1]
        encoded = _VIEW_JSON.dump_json(build())
        self._kept[agent_id] = (source, encoded)
        return encoded


def usage_figures(usage: Usage) -> UsageFigures:
    return UsageFigures(**usage_columns(usage), calls=usage.calls)


def usage_view(
    total: Usage,
    by_agent: dict[str, Usage],
    by_key: dict[str, Usage],
    by_model: dict[str, Usage],
    by_day: dict[str, Usage],
) -> UsageView:
    def table(groups: dict[str, Usage]) -> dict[str, UsageFigures]:
        return {name: usage_figures(u) for name, u in groups.items()}

    return UsageView(
        total=usage_figures(total),
        by_agent=table(by_agent),
        by_key=table(by_key),
        by_model=table(by_model),
        by_day=table(by_day),
    )
