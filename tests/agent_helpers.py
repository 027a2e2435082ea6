"""Helpers for tests that run real agent trees against the scripted model server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from dispatch.hub.agents.loop import Agent
from dispatch.hub.agents.spec import AgentSpec, AgentState
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.ids import new_id
from dispatch.hub.llm.client import LiteLLMClient
from dispatch.hub.policy.grants import Grants
from tests.fakes.scripted_llm import ToolCall

MODEL = "openai/scripted"


def top_spec(task: str, *, grants: Grants | None = None, **extra: Any) -> AgentSpec:
    return AgentSpec(id=new_id(), name="top", task=task, model=MODEL, grants=grants or Grants.everything(), **extra)


def make_tree(root: Path) -> AgentTree:
    return AgentTree(root, LiteLLMClient())


def call(tool: str, **arguments: Any) -> ToolCall:
    return ToolCall(name=tool, arguments=arguments)


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll until ``condition()`` holds; fail the test when it does not within the timeout."""
    with anyio.fail_after(timeout_s):
        while not condition():
            await anyio.sleep(0.01)


def tool_messages(messages: list[dict[str, Any]]) -> list[str]:
    return [str(m["content"]) for m in messages if m["role"] == "tool"]


def last_tool_json(messages: list[dict[str, Any]]) -> Any:
    return json.loads(tool_messages(messages)[-1])


def assert_done(agent: Agent) -> None:
    assert agent.state is AgentState.done, f"{agent.id} ended {agent.state.value}: {agent.error or agent.reason}"
