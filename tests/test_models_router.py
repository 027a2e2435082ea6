"""The key router through real litellm against two scripted servers acting as two providers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatch.hub.errors import KeysExhausted, ModelCallError, UserError
from dispatch.hub.llm.failures import reset_from_headers
from dispatch.hub.llm.ledger import UsageRow
from tests.fakes.scripted_llm import Fail, Reply, ScriptedLLM
from tests.models_helpers import Rig, ask, config, cost, key, model

pytestmark = pytest.mark.anyio


@pytest.fixture
def rig(two: tuple[ScriptedLLM, ScriptedLLM], tmp_path: Path) -> Iterator[Rig]:
    a, b = two
    rig = Rig(
        config(
            key("key-a", "openai", a, {"a-light": model("light"), "a-heavy": model("heavy", "coding")}),
            key("key-b", "deepseek", b, {"b-heavy": model("heavy")}, budget="$0.05/day"),
            fallback_order=["key-a", "key-b"],
            probe_interval=30,
        ),
        tmp_path,
    )
    yield rig
    rig.close()


async def test_quota_on_key_a_moves_the_same_call_to_key_b_of_another_provider(
    rig: Rig, two: tuple[ScriptedLLM, ScriptedLLM]
) -> None:
    a, b = two
    a.script("[step]", [Fail.quota()])
    b.script("[step]", [Reply(text="answered by b", usage=(10, 2))])

    completion = await rig.router.complete("heavy", ask("[step] go"), [], agent_id="agent-1")

    assert completion.text == "answered by b"
    assert completion.model == "deepseek/b-heavy"
    (seen_by_a,) = a.requests_for("[step]")
    (seen_by_b,) = b.requests_for("[step]")
    assert (seen_by_a.model, seen_by_a.status) == ("a-heavy", 429)
    assert (seen_by_b.model, seen_by_b.status) == ("b-heavy", 200)
    assert seen_by_b.messages == seen_by_a.messages
    assert seen_by_a.headers["authorization"] == "Bearer sk-key-a"
    assert seen_by_b.headers["authorization"] == "Bearer sk-key-b"
    rows = await rig.store.usage_rows()
    assert [(r.key, r.model, r.outcome, r.agent_id) for r in rows] == [
        ("key-a", "openai/a-heavy", "quota", "agent-1"),
        ("key-b", "deepseek/b-heavy", "ok", "agent-1"),
    ]
    assert rows[1].cost_usd == pytest.approx(cost(10, 2)) == completion.usage.cost_usd
    assert (rows[1].tokens_in, rows[1].tokens_out) == (10, 2)


async def test_heavy_resolves_to_the_first_heavy_model_whose_key_is_available(
    rig: Rig, two: tuple[ScriptedLLM, ScriptedLLM]
) -> None:
    a, b = two
    assert [(c.key_name, c.model) for c in rig.router.candidates("heavy")] == [
        ("key-a", "a-heavy"),
        ("key-b", "b-heavy"),
    ]
    assert [c.model for c in rig.router.candidates("coding")] == ["a-heavy"]
    a.script("[first]", [Reply(text="a", usage=(1, 1))])
    assert (await rig.router.complete("heavy", ask("[first] go"), [])).model == "openai/a-heavy"

    a.script("[second]", [Fail.auth()])
    b.script("[second]", [Reply(text="b", usage=(1, 1))])
    assert (await rig.router.complete("heavy", ask("[second] go"), [])).model == "deepseek/b-heavy"
    b.script("[third]", [Reply(text="b again", usage=(1, 1))])
    third = await rig.router.complete("heavy", ask("[third] go"), [])
    assert third.model == "deepseek/b-heavy", "a refused key stays skipped"
    assert len(a.requests) == 2


async def test_a_daily_budget_reached_per_the_ledger_skips_the_key_until_the_next_day(
    rig: Rig, two: tuple[ScriptedLLM, ScriptedLLM]
) -> None:
    a, b = two
    a.script("[budget]", [Fail.quota(), Fail.quota(), Reply(text="a is back", usage=(1, 1))])
    b.script("[budget]", [Reply(text="b spends", usage=(60, 0))])

    first = await rig.router.complete("heavy", ask("[budget] go"), [])
    assert first.text == "b spends" and first.usage.cost_usd == pytest.approx(0.06)
    assert await rig.store.spend("key-b") == pytest.approx(0.06)

    rig.clock.advance(31)  # key-a's unknown reset is probed again; key-b is over its $0.05/day
    with pytest.raises(KeysExhausted) as exhausted:
        await rig.router.complete("heavy", ask("[budget] go"), [])
    assert "key-b: budget $0.05/day reached" in exhausted.value.reason
    assert len(b.requests) == 1, "the spent key was not called"

    rig.clock.advance(24 * 3600)
    assert await rig.router.blocked(rig.router.candidates("b-heavy")[0]) is None, "a new day, a new budget"
    assert (await rig.router.complete("heavy", ask("[budget] go"), [])).text == "a is back"


async def test_a_budget_spent_by_earlier_calls_in_the_ledger_skips_the_key(
    rig: Rig, two: tuple[ScriptedLLM, ScriptedLLM]
) -> None:
    a, _ = two
    now = rig.clock.now()
    await rig.store.record_usage(
        UsageRow(now - 60, "old-agent", "key-b", "deepseek", "deepseek/b-heavy", "heavy", 0, 0, 0.05)
    )
    a.script("[ledger]", [Fail.rate_limit(120)])

    with pytest.raises(KeysExhausted) as exhausted:
        await rig.router.complete("b-heavy", ask("[ledger] go"), [])
    assert "budget $0.05/day reached" in exhausted.value.reason
    with pytest.raises(KeysExhausted) as both:
        await rig.router.complete("heavy", ask("[ledger] go"), [])
    assert "key-a: rate limit" in both.value.reason and "waiting for key until" in both.value.reason
    assert both.value.until is not None and both.value.until.timestamp() == pytest.approx(now + 120)


async def test_rate_limit_marks_the_key_until_its_reset_then_it_is_first_again(
    rig: Rig, two: tuple[ScriptedLLM, ScriptedLLM]
) -> None:
    a, b = two
    a.script("[limited]", [Fail.rate_limit(90), Reply(text="a again", usage=(1, 1))])
    b.script("[limited]", [Reply(text="b meanwhile", usage=(1, 1)), Reply(text="b still", usage=(1, 1))])

    assert (await rig.router.complete("heavy", ask("[limited] go"), [])).text == "b meanwhile"
    rig.clock.advance(60)
    assert (await rig.router.complete("heavy", ask("[limited] go"), [])).text == "b still"
    rig.clock.advance(30)
    assert (await rig.router.complete("heavy", ask("[limited] go"), [])).text == "a again"


async def test_transient_errors_retry_on_the_same_key_before_moving_on(
    rig: Rig, two: tuple[ScriptedLLM, ScriptedLLM]
) -> None:
    a, b = two
    a.script("[flaky]", [Fail.unavailable(), Reply(text="a recovered", usage=(1, 1))])
    assert (await rig.router.complete("a-heavy", ask("[flaky] go"), [])).text == "a recovered"

    a.script("[down]", [Fail.unavailable()] * 3)
    b.script("[down]", [Reply(text="b took over", usage=(1, 1))])
    assert (await rig.router.complete("heavy", ask("[down] go"), [])).text == "b took over"
    outcomes = [(r.key, r.outcome) for r in await rig.store.usage_rows()]
    assert outcomes[-4:] == [("key-a", "transient")] * 3 + [("key-b", "ok")]


async def test_every_key_refused_is_an_error_not_a_wait(rig: Rig, two: tuple[ScriptedLLM, ScriptedLLM]) -> None:
    a, b = two
    a.script("[refused]", [Fail.auth()])
    b.script("[refused]", [Fail(403, {"error": {"message": "forbidden"}})])

    with pytest.raises(ModelCallError) as raised:
        await rig.router.complete("heavy", ask("[refused] go"), [])
    assert not isinstance(raised.value, KeysExhausted)
    assert "until the config changes" in str(raised.value)


async def test_unknown_builtin_tag_and_plain_names(rig: Rig, scripted_llm: ScriptedLLM) -> None:
    with pytest.raises(UserError, match="no model has the tag 'research'"):
        await rig.router.complete("research", ask("x"), [])
    scripted_llm.script("[env]", [Reply(text="through the environment", usage=(3, 1))])
    completion = await rig.router.complete("openai/scripted", ask("[env] go"), [], agent_id="e")
    assert completion.text == "through the environment"
    (row,) = await rig.store.usage_rows()
    assert (row.key, row.model, row.agent_id) == ("env:openai", "openai/scripted", "e")


def test_reset_headers() -> None:
    now = 1_000.0
    assert reset_from_headers({"retry-after": "7"}, now) == 1_007.0
    assert reset_from_headers({"Retry-After-Ms": "1500"}, now) == 1_001.5
    assert reset_from_headers({"retry-after": "Thu, 01 Jan 1970 00:20:00 GMT"}, now) == 1_200.0
    limits = {
        "x-ratelimit-remaining-requests": "5",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert reset_from_headers(limits, now) == 1_360.0
    assert reset_from_headers({"anthropic-ratelimit-tokens-reset": "1970-01-01T00:30:00Z"}, now) == 1_800.0
    assert reset_from_headers({"content-type": "application/json"}, now) is None
