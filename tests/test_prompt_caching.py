"""Prompt caching and what it costs: every request to an Anthropic model carries cache_control
breakpoints, and the cached tokens the provider reports are in the agent's usage, the run's, the
ledger and ``GET /api/usage``, priced at the cache rates (litellm's, or the configured ones)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import pytest
from sqlite_utils import Database

from dispatch.hub.llm.litellm_call import _usage_of, load_litellm
from dispatch.hub.llm.prices import Prices
from dispatch.hub.llm.prompt_cache import with_breakpoints
from dispatch.hub.llm.types import JsonDict, Usage
from dispatch.hub.store.db import Store
from dispatch.hub.store.schema import MIGRATIONS
from tests.agent_helpers import assert_done, call
from tests.fakes.scripted_llm import Reply, ScriptedLLM
from tests.models_helpers import Rig, config, spec
from tests.test_cli_run import dispatch

pytestmark = pytest.mark.anyio

SONNET = "claude-sonnet-4-5"
LIST_TWICE = [
    Reply(tool_calls=[call("list_dir", path=".")]),
    Reply(tool_calls=[call("list_dir", path=".")]),
    Reply(text="listed twice"),
]


def anthropic_key(server: ScriptedLLM, models: dict[str, Any]) -> dict[str, Any]:
    return {"name": "claude", "provider": "anthropic", "key": "sk-ant-test", "base_url": server.anthropic_base_url} | {
        "models": models
    }


def marked(block: object) -> bool:
    return isinstance(block, dict) and "cache_control" in block


def breakpoints(body: JsonDict) -> list[str]:
    """Where an Anthropic request body carries cache_control: tools, system, message N."""
    found = ["tools"] if marked(body["tools"][-1]) else []
    found += ["system"] if marked(body["system"][-1]) else []
    for index, message in enumerate(cast(list[JsonDict], body["messages"])):
        content = message["content"]
        if marked(message) or (isinstance(content, list) and any(marked(b) for b in cast(list[object], content))):
            found.append(f"message {index}")
    return found


def litellm_sonnet() -> Prices:
    """Sonnet's prices as litellm's cost map has them (read here, in the test's process)."""
    info: Any = load_litellm().get_model_info(model=f"anthropic/{SONNET}")
    return Prices(
        info["input_cost_per_token"],
        info["output_cost_per_token"],
        info["cache_read_input_token_cost"],
        info["cache_creation_input_token_cost"],
    )


async def test_every_request_to_an_anthropic_model_carries_breakpoints_and_cache_reads_are_billed_at_the_cache_rate(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    scripted_llm.script("[cached]", LIST_TWICE)
    rig = Rig(config(anthropic_key(scripted_llm, {SONNET: {"tags": ["heavy"]}})), tmp_path)
    try:
        async with rig.tree(tmp_path) as tree:
            top = await tree.run(spec("[cached] list the project twice", "heavy"))
        rows = await rig.store.usage_rows()
        total = await rig.store.usage_total()
    finally:
        rig.close()

    assert_done(top)
    bodies = [r.body for r in scripted_llm.requests_for("[cached]")]
    # tools, system, the last message and the last one before the latest assistant message
    assert [breakpoints(b) for b in bodies] == [
        ["tools", "system", "message 0"],
        ["tools", "system", "message 0", "message 2"],
        ["tools", "system", "message 2", "message 4"],
    ]
    # the first step writes its prompt to the cache, each next one reads the previous one's
    assert rows[0].cache_read_tokens == 0 and rows[0].cache_write_tokens == rows[0].tokens_in
    assert all(0 < r.cache_read_tokens < r.tokens_in for r in rows[1:])
    assert [r.cache_read_tokens for r in rows[1:]] == [p.tokens_in for p in rows[:-1]]
    sonnet = litellm_sonnet()
    for row in rows:
        usage = Usage(
            prompt_tokens=row.tokens_in,
            completion_tokens=row.tokens_out,
            cache_read_tokens=row.cache_read_tokens,
            cache_write_tokens=row.cache_write_tokens,
        )
        assert row.cost_usd == pytest.approx(sonnet.cost_usd(usage))
    read_at_input_price = sum(r.tokens_in * sonnet.input + r.tokens_out * sonnet.output for r in rows[1:])
    assert sum(r.cost_usd for r in rows[1:]) < 0.5 * read_at_input_price
    assert top.usage.cache_read_tokens == total.cache_read_tokens == sum(r.cache_read_tokens for r in rows) > 0
    assert top.usage.cache_write_tokens == total.cache_write_tokens == sum(r.cache_write_tokens for r in rows)
    assert top.usage.cost_usd == pytest.approx(total.cost_usd)


async def test_configured_cache_prices_are_used_and_missing_ones_are_the_input_price(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    scripted_llm.script("[priced]", LIST_TWICE)
    scripted_llm.script("[plain]", LIST_TWICE)
    priced = {"input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0, "cache_read_usd_per_mtok": 0.2}
    models = {
        "house-model": {"tags": ["priced"], **priced, "cache_write_usd_per_mtok": 2.5},
        "plain-model": {"tags": ["plain"], "input_usd_per_mtok": 2.0, "output_usd_per_mtok": 8.0},
    }
    rig = Rig(config(anthropic_key(scripted_llm, models)), tmp_path)
    try:
        async with rig.tree(tmp_path) as tree:
            for task, tag in (("[priced] list twice", "priced"), ("[plain] list twice", "plain")):
                assert_done(await tree.run(spec(task, tag)))
        rows = await rig.store.usage_rows()
    finally:
        rig.close()

    house = Prices(2e-6, 8e-6, 0.2e-6, 2.5e-6)
    plain = Prices(2e-6, 8e-6)
    for row in rows:
        usage = Usage(
            prompt_tokens=row.tokens_in,
            completion_tokens=row.tokens_out,
            cache_read_tokens=row.cache_read_tokens,
            cache_write_tokens=row.cache_write_tokens,
        )
        prices = house if row.model == "anthropic/house-model" else plain
        assert row.cost_usd == pytest.approx(prices.cost_usd(usage))
        if row.model == "anthropic/plain-model":  # no cache prices: every prompt token at the input price
            assert row.cost_usd == pytest.approx((row.tokens_in * 2 + row.tokens_out * 8) / 1e6)
    assert {r.model for r in rows if r.cache_read_tokens} == {"anthropic/house-model", "anthropic/plain-model"}


async def test_the_cost_is_litellms_for_anthropic_and_openai_cached_tokens() -> None:
    """The same usage priced here and by litellm.completion_cost (in this process only: the model
    worker never calls it)."""
    litellm = load_litellm()
    tools = [{"type": "function", "function": {"name": "look", "parameters": {"type": "object", "properties": {}}}}]
    prompt = [{"role": "system", "content": "You are careful. " * 80}, {"role": "user", "content": "[litellm] go"}]
    with ScriptedLLM(prompt_cache=True) as server:
        server.script("[litellm]", [Reply(text="one"), Reply(text="two"), Reply(text="three"), Reply(text="four")])
        for model, base in (("anthropic/claude-sonnet-4-5", server.anthropic_base_url), ("openai/gpt-4o", None)):
            messages, schemas = with_breakpoints(prompt, tools) if model.startswith("anthropic") else (prompt, tools)
            for _ in range(2):
                response: Any = await litellm.acompletion(
                    model=model, messages=messages, tools=schemas, api_base=base or server.base_url, api_key="sk"
                )
                usage = _usage_of(response.usage, model)
                assert usage.cost_usd == pytest.approx(litellm.completion_cost(completion_response=response))
            assert usage.cache_read_tokens > 0
            assert usage.prompt_tokens == response.usage.prompt_tokens  # cached tokens included, as litellm counts
        server.assert_complete()


def test_dispatch_run_json_shows_the_cached_tokens(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.script("[cli-cached]", LIST_TWICE)
    base, home = scripted_llm.anthropic_base_url, tmp_path / "home"
    env = dict(os.environ, ANTHROPIC_API_BASE=base, ANTHROPIC_BASE_URL=base, DISPATCH_HOME=str(home))
    model = f"anthropic/{SONNET}"

    done = dispatch("run", "[cli-cached] list twice", "--model", model, "--root", str(tmp_path), "--json", env=env)

    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    usage = out["usage"]
    assert usage["calls"] == 3 and 0 < usage["cache_read_tokens"] < usage["prompt_tokens"]
    assert usage["cache_write_tokens"] > 0
    assert out["agents"][0]["usage"]["cache_read_tokens"] == usage["cache_read_tokens"]
    with Database(home / "dispatch.db") as db:
        [(read, written)] = db.execute("select sum(cache_read_tokens), sum(cache_write_tokens) from usage").fetchall()
    assert (read, written) == (usage["cache_read_tokens"], usage["cache_write_tokens"])


async def test_a_ledger_from_before_cache_tokens_is_migrated_with_none_cached(tmp_path: Path) -> None:
    path = tmp_path / "dispatch.db"
    with Database(path) as db:
        MIGRATIONS.apply(db, stop_before="m106_cache_tokens")
        db.table("usage").insert(
            {"at": 1.0, "key": "k", "model": "m", "tokens_in": 50, "tokens_out": 5, "cost_usd": 0.1}
        )

    async with Store.open(path) as store:
        total = await store.usage_total()
        [row] = await store.usage_rows()

    assert (total.prompt_tokens, total.cache_read_tokens, total.cache_write_tokens) == (50, 0, 0)
    assert (row.cache_read_tokens, row.cache_write_tokens) == (0, 0)
