"""Helpers for the model tests: a models config over scripted servers acting as providers (the
key router's), and a model pool's worker pids and its stop, read and done on the model loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dispatch.hub.agents.spec import AgentSpec
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.ids import new_id
from dispatch.hub.llm.clock import ManualClock
from dispatch.hub.llm.model_loop import model_loop
from dispatch.hub.llm.model_process import ModelProcess
from dispatch.hub.llm.models_config import ModelsConfig, load_models_section
from dispatch.hub.llm.router import Router
from dispatch.hub.policy.grants import Grants
from dispatch.hub.store.db import Store
from tests.fakes.scripted_llm import ScriptedLLM

PRICE = 1000.0
"""USD per million tokens, in and out, for every test model: 10 tokens cost $0.01."""


def model(*tags: str) -> dict[str, Any]:
    return {"tags": list(tags), "input_usd_per_mtok": PRICE, "output_usd_per_mtok": PRICE}


def key(name: str, provider: str, server: ScriptedLLM, models: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": provider,
        "key": f"sk-{name}",
        "base_url": server.base_url,
        "models": models,
        **extra,
    }


def config(*keys: dict[str, Any], **extra: Any) -> ModelsConfig:
    section: dict[str, Any] = {"keys": list(keys), "backoff_s": 0.01, **extra}
    return load_models_section(section, "test-config.yaml")


def cost(prompt_tokens: int, completion_tokens: int = 0) -> float:
    return (prompt_tokens + completion_tokens) * PRICE / 1e6


class Rig:
    """A router over a config, with a ledger in a temp dir and a manual clock."""

    def __init__(self, models: ModelsConfig, tmp_path: Path) -> None:
        self.clock = ManualClock()
        self.store = Store.open(tmp_path / "ledger" / "dispatch.db")
        self.router = Router(models, self.store, clock=self.clock)

    def tree(self, root: Path) -> AgentTree:
        return AgentTree(root, self.router)

    def close(self) -> None:
        self.store.close()


def ask(task: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are a test agent."}, {"role": "user", "content": task}]


def spec(task: str, model: str, *, grants: Grants | None = None, **extra: Any) -> AgentSpec:
    """A top agent asking for ``model`` (a tag or a name)."""
    return AgentSpec(id=new_id(), name="top", task=task, model=model, grants=grants or Grants.everything(), **extra)


async def pool_pids(pool: ModelProcess) -> list[int]:
    """The pids of the pool's workers, read on the model loop (where the pool lives)."""

    async def read() -> list[int]:
        return pool.pids

    return await model_loop().run(read)


async def stop_pool(pool: ModelProcess) -> None:
    """Stop the pool on the model loop, as a command's exit does."""

    async def stop() -> None:
        pool._stop()  # pyright: ignore[reportPrivateUsage] (what the command's exit does)

    await model_loop().run(stop)
