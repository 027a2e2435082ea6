"""A long agent: tokens sent and billed over 200 steps, with and without compaction, with and
without prompt caching.

One agent reads files of about 500 tokens, one per step, for ``--steps`` steps and then reports,
through the real key router and litellm's ``anthropic/`` provider, against the suite's scripted
Anthropic endpoint (``tests/fakes/scripted_llm.py``), which plays Anthropic's prompt cache from the
request's ``cache_control`` breakpoints and bills at litellm's prices for Claude Sonnet 4.5. It
runs twice: with a context window too large to reach (no compaction), and with a window of
``--window`` tokens (compaction at 80% of it). For each run it prints the prompt tokens sent, the
part read from and written to the cache, the dollars billed, and the dollars the same calls would
have cost with no caching (every prompt token at the input price: what a request without
breakpoints is billed).

``python -m bench.long_agent [--steps N] [--window TOKENS] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import report_value
from dispatch.hub.agents.compaction import SUMMARY_PROMPT
from dispatch.hub.agents.spec import AgentSpec, AgentState
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.ids import new_id
from dispatch.hub.llm.litellm_call import litellm_prices
from dispatch.hub.llm.models_config import load_models_section
from dispatch.hub.llm.router import Router
from dispatch.hub.llm.scripted import RecordedRequest, Reply, ToolCall
from dispatch.hub.policy.grants import Grants
from dispatch.hub.store.db import Store
from tests.fakes.scripted_llm import ScriptedLLM

MODEL = "claude-sonnet-4-5"
FILES = 25
LINE = "The quick brown fox jumps over the lazy dog near the quiet river bank.\n"


def _project(root: Path) -> None:
    root.mkdir(parents=True)
    for index in range(FILES):
        (root / f"part_{index}.txt").write_text(f"part {index}\n" + LINE * 28)  # ~2,000 characters


def _reader(steps: int) -> Callable[[RecordedRequest], Reply]:
    """The model: reads part_0 .. part_24 round and round, one a step, then reports; asked for a
    summary, it gives a short one."""
    taken = 0

    def answer(request: RecordedRequest) -> Reply:
        nonlocal taken
        if request.messages[0].get("content") == SUMMARY_PROMPT:
            return Reply(text=f"Reading the parts in turn; {taken} read so far, nothing unusual in any.")
        taken += 1
        if taken > steps:
            return Reply(text=f"Read {steps} parts; all of them say the same.")
        return Reply(tool_calls=[ToolCall("read_file", {"path": f"part_{(taken - 1) % FILES}.txt"})])

    return answer


async def _run(work: Path, steps: int, window: int | None) -> dict[str, float]:
    label = "compacting" if window else "whole"
    root = work / label / "project"
    _project(root)
    with ScriptedLLM() as llm:
        llm.script(f"[long {label}]", [_reader(steps)] * (2 * steps + 10))
        model: dict[str, Any] = {"tags": ["long"], "context_window": window or 1_000_000}
        key = {"name": "claude", "provider": "anthropic", "key": "sk-ant-bench", "base_url": llm.anthropic_base_url}
        models = load_models_section({"keys": [key | {"models": {MODEL: model}}]}, "bench-config.yaml")
        store = Store.open(work / label / "data" / "dispatch.db")
        try:
            started = time.perf_counter()
            async with AgentTree(root, Router(models, store)) as tree:
                spec = AgentSpec(
                    id=new_id(),
                    name="reader",
                    task=f"[long {label}] Read the parts one by one and report what they say.",
                    model="long",
                    grants=Grants(tools={"fs": ("read_file",)}),
                )
                agent = await tree.run(spec)
            seconds = time.perf_counter() - started
            rows = await store.usage_rows()
        finally:
            store.close()
    if agent.state is not AgentState.done:
        raise SystemExit(f"the {label} run did not finish: {agent.state.value} ({agent.error or agent.reason})")
    prices = litellm_prices(f"anthropic/{MODEL}")
    assert prices is not None, "litellm has no price for Claude Sonnet 4.5"
    sent = sum(r.tokens_in for r in rows)
    out = sum(r.tokens_out for r in rows)
    return {
        "calls": len(rows),
        "sent": sent,
        "read": sum(r.cache_read_tokens for r in rows),
        "written": sum(r.cache_write_tokens for r in rows),
        "billed": sum(r.cost_usd for r in rows),
        "uncached": sent * prices.input + out * prices.output,
        "compactions": agent.compaction.count if agent.compaction is not None else 0,
        "seconds": seconds,
    }


def _print(label: str, figures: dict[str, float]) -> None:
    report_value(f"long, {label}, model calls", figures["calls"], "calls")
    report_value(f"long, {label}, compactions", figures["compactions"], "times")
    report_value(f"long, {label}, tokens sent", figures["sent"] / 1e6, "M tokens")
    report_value(f"long, {label}, cache reads", figures["read"] / 1e6, "M tokens")
    report_value(f"long, {label}, cache writes", figures["written"] / 1e6, "M tokens")
    report_value(f"long, {label}, billed", figures["billed"], "USD")
    report_value(f"long, {label}, billed uncached", figures["uncached"], "USD")
    report_value(f"long, {label}, wall", figures["seconds"], "s")


async def main_async(steps: int, window: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dispatch-bench-long-") as work:
        for label, size in (("whole", None), ("compacting", window)):
            _print(label, await _run(Path(work), steps, size))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.long_agent", description=__doc__)
    parser.add_argument("--steps", type=int, default=200, help="file reads before the report")
    parser.add_argument("--window", type=int, default=32_000, help="the context window of the compacting run")
    parser.add_argument("--quick", action="store_true", help="20 steps and a 6,000-token window")
    args = parser.parse_args()
    steps, window = (20, 6_000) if args.quick else (args.steps, args.window)
    asyncio.run(main_async(steps, window))


if __name__ == "__main__":
    main()
