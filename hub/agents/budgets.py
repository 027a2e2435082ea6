"""Tree budgets: an agent's ``budget_usd`` and ``max_tokens`` cap what it *and its descendants*
spend, and a child's budget comes out of its parent's remainder.

Spend rolls up live from each agent's in-memory usage (the same figures the usage ledger holds).
A parent's remainder is its cap minus its own spend, minus, for each child, the child's budget
while the child runs (reserved) or what the child's subtree actually spent. A summon asking for
more than the remainder is refused. After every step the tree checks the agent and its ancestors;
one that has reached its cap stops with state ``failed`` and reason ``budget``.

``budget_usd`` counts what the calls were billed (cache reads and writes at their own prices).
``max_tokens`` counts the prompt and completion tokens the model processed anew, leaving out the
prompt tokens read from the provider's prompt cache: every step re-sends the whole transcript, and
with caching those re-read tokens are billed at a tenth or less, so counting them would stop a
long-running agent on its own history long before its spend warranted it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from dispatch.hub.agents.loop import Agent
from dispatch.hub.llm.types import Usage


class TreeView(Protocol):
    """What budgets need of the tree."""

    agents: dict[str, Agent]

    def children_of(self, agent_id: str) -> list[Agent]: ...


def _subtree(tree: TreeView, agent: Agent) -> Iterator[Agent]:
    yield agent
    for child in tree.children_of(agent.id):
        yield from _subtree(tree, child)


def subtree_ids(tree: TreeView, agent_id: str) -> list[str]:
    """The agent and all its descendants."""
    return [a.id for a in _subtree(tree, tree.agents[agent_id])]


def rolled_up(tree: TreeView, agent_id: str) -> Usage:
    """What the agent and all its descendants have used so far."""
    total = Usage()
    for agent in _subtree(tree, tree.agents[agent_id]):
        total.add(agent.usage)
    return total


def _tokens(usage: Usage) -> int:
    """What counts toward ``max_tokens``: every token but those read from the prompt cache."""
    return usage.prompt_tokens - usage.cache_read_tokens + usage.completion_tokens


def remainder(tree: TreeView, agent: Agent) -> tuple[float | None, int | None]:
    """What the agent may still hand to a new child: dollars and tokens (None: no cap)."""
    usd, tokens = agent.spec.budget_usd, agent.spec.max_tokens
    if usd is not None:
        usd -= agent.usage.cost_usd
    if tokens is not None:
        tokens -= _tokens(agent.usage)
    for child in tree.children_of(agent.id):
        used = rolled_up(tree, child.id)
        live = not child.state.terminal
        if usd is not None:
            reserved = child.spec.budget_usd if live and child.spec.budget_usd is not None else 0.0
            usd -= max(reserved, used.cost_usd)
        if tokens is not None:
            reserved_tokens = child.spec.max_tokens if live and child.spec.max_tokens is not None else 0
            tokens -= max(reserved_tokens, _tokens(used))
    return usd, tokens


def child_budget_refusal(tree: TreeView, parent: Agent, budget_usd: float | None, max_tokens: int | None) -> str | None:
    """Why a child with this budget may not be summoned, or None when it may."""
    usd_left, tokens_left = remainder(tree, parent)
    if budget_usd is not None and usd_left is not None and budget_usd > usd_left:
        return f"budget_usd {budget_usd:g} is more than you have left (${max(usd_left, 0.0):.4g})"
    if max_tokens is not None and tokens_left is not None and max_tokens > tokens_left:
        return f"max_tokens {max_tokens} is more than you have left ({max(tokens_left, 0)})"
    return None


def over_cap(tree: TreeView, agent: Agent) -> str | None:
    """A message when the agent's subtree has reached its cap, else None."""
    cap_usd, cap_tokens = agent.spec.budget_usd, agent.spec.max_tokens
    if cap_usd is None and cap_tokens is None:
        return None
    used = rolled_up(tree, agent.id)
    if cap_usd is not None and used.cost_usd >= cap_usd:
        return f"budget: spent ${used.cost_usd:.4g} of its ${cap_usd:g} budget"
    if cap_tokens is not None and _tokens(used) >= cap_tokens:
        return f"budget: used {_tokens(used)} of its {cap_tokens} tokens"
    return None


def capped_ancestry(tree: TreeView, agent: Agent) -> Iterator[tuple[Agent, str]]:
    """The agent and each of its ancestors that has reached its cap, nearest first, with why."""
    node: Agent | None = agent
    while node is not None:
        message = over_cap(tree, node)
        if message is not None:
            yield node, message
        parent_id = node.spec.parent_id
        node = tree.agents.get(parent_id) if parent_id is not None else None
