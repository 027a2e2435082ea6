"""Agents as the interfaces see them: :class:`~dispatch.hub.views.AgentView` built from a live
agent of the tree or from its row in the store, and the usage ledger as a
:class:`~dispatch.hub.views.UsageView`."""

from __future__ import annotations

from dispatch.hub.agents.loop import Agent
from dispatch.hub.agents.spec import AgentState
from dispatch.hub.llm.ledger import usage_columns
from dispatch.hub.llm.types import Usage
from dispatch.hub.store.records import AgentRow
from dispatch.hub.views import AgentView, PlacementView, UsageFigures, UsageView


def live_view(
    agent: Agent, *, chat_id: str | None = None, question: str | None = None, placement: PlacementView | None = None
) -> AgentView:
    """A running (or finished, this session) agent of the tree; ``placement``: where its tool servers run."""
    return AgentView(
        id=agent.id,
        parent_id=agent.spec.parent_id,
        chat_id=chat_id,
        root=agent.spec.root,
        name=agent.spec.name,
        template=agent.spec.template,
        task=agent.spec.task,
        state=agent.state.value,
        reason=agent.reason,
        waiting_until=agent.waiting_until.isoformat() if agent.waiting_until is not None else None,
        model=agent.model,
        scope=list(agent.spec.scope),
        detached=agent.spec.detached,
        tokens_in=agent.usage.prompt_tokens,
        tokens_out=agent.usage.completion_tokens,
        cache_read_tokens=agent.usage.cache_read_tokens,
        cache_write_tokens=agent.usage.cache_write_tokens,
        cost_usd=agent.usage.cost_usd,
        steps=agent.steps_taken,
        report=agent.report,
        error=agent.error,
        question=question if agent.state is AgentState.waiting_user else None,
        compactions=agent.compaction.count if agent.compaction is not None else 0,
        placement=placement or PlacementView(),
        **agent.spec.caps.spec_fields(),
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
