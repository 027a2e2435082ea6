"""Long-running agents: an agent whose work outgrows its model's context window compacts what it
sends (never what is kept) and finishes, through the real litellm path, against a scripted
provider that refuses any request longer than its window."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from dispatch.hub.agents.compaction import SUMMARY_PROMPT, Compaction, kept_messages, plan, sent
from dispatch.hub.agents.spec import AgentState
from dispatch.hub.agents.tree import AgentTree
from dispatch.hub.events import AgentCompacted, Event
from dispatch.hub.llm.context import ContextMeter, estimate_tokens
from dispatch.hub.llm.router import Router
from dispatch.hub.llm.scripted import RecordedRequest, Reply, ScriptedModel, ToolCall
from dispatch.hub.mcp import tools as mcp_hub
from dispatch.hub.policy.grants import Grants
from dispatch.hub.service.hub import Hub
from dispatch.hub.store.db import Store
from dispatch.servers.hublink import MessageKind
from tests.agent_helpers import call, until
from tests.fakes.scripted_llm import ScriptedLLM
from tests.hub_helpers import MODEL, dirs
from tests.models_helpers import config, spec

pytestmark = pytest.mark.anyio

WINDOW = 6000
"""The scripted provider's context window, in its tokens (four characters each)."""
FILES = 10
FILE_CHARS = WINDOW * 2  # half the window each: ten of them are five windows of reading
SECRET = re.compile(r"secret-(\d+)-([a-z]+)")
WORDS = ["amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron", "iris", "juniper"]


def _project(root: Path) -> None:
    filler = "The quick brown fox jumps over the lazy dog near the quiet river bank.\n"
    for index in range(FILES):
        body = f"secret-{index}-{WORDS[index]}\n" + filler * (FILE_CHARS // len(filler))
        (root / f"part_{index}.txt").write_text(body)


def _text(request: RecordedRequest) -> str:
    return "\n".join(str(m.get("content") or "") for m in request.messages)


def _reader(request: RecordedRequest) -> Reply:
    """The model: reads part_0.txt .. part_9.txt in turn, notes each file's secret as it goes, and
    reports every secret it knows (from what it was shown: its notes, the summaries, the results).
    Asked for a summary, it lists the secrets and files it sees."""
    known = dict(SECRET.findall(_text(request)))
    if request.messages[0].get("content") == SUMMARY_PROMPT:
        found = ", ".join(f"secret-{i}-{w}" for i, w in sorted(known.items()))
        return Reply(text=f"You are reading part_0.txt to part_9.txt one by one. Found so far: {found}.")
    last = request.messages[-1]
    note = ""
    if last.get("role") == "tool":
        seen = SECRET.search(str(last.get("content")))
        note = f"Noted secret-{seen.group(1)}-{seen.group(2)}." if seen else ""
    missing = [i for i in range(FILES) if str(i) not in known]
    if missing:
        return Reply(text=note or None, tool_calls=[ToolCall("read_file", {"path": f"part_{missing[0]}.txt"})])
    return Reply(text="Secrets: " + ", ".join(known[str(i)] for i in range(FILES)))


def _compacted(events: list[Event], agent_id: str) -> list[AgentCompacted]:
    return [e.data for e in events if e.agent_id == agent_id and isinstance(e.data, AgentCompacted)]


async def _run(tmp_path: Path, llm: ScriptedLLM, models: dict[str, Any]) -> tuple[Any, list[Event]]:
    root = tmp_path / "project"
    root.mkdir()
    _project(root)
    store = Store.open(tmp_path / "data" / "dispatch.db")
    try:
        router = Router(config(models), store)
        llm.script("[reader]", [_reader] * 60)
        grants = Grants(tools={"fs": ("read_file",)})
        async with AgentTree(root, router) as tree, tree.events.subscribe() as stream:
            agent = await tree.run(
                spec("[reader] Read part_0.txt to part_9.txt; report each one's secret.", "m", grants=grants)
            )
            events: list[Event] = []
            while True:
                try:
                    events.append(stream.receive_nowait())
                except Exception:
                    break
        return agent, events
    finally:
        store.close()


def _key(llm: ScriptedLLM, **model: Any) -> dict[str, Any]:
    return {"name": "k", "provider": "openai", "key": "sk-k", "base_url": llm.base_url, "models": {"m": model}}


def _check_report(agent: Any, llm: ScriptedLLM) -> None:
    assert agent.state is AgentState.done, agent.error
    assert agent.report == "Secrets: " + ", ".join(WORDS)
    assert llm.failures == []
    assert agent.usage.calls == len(llm.requests) - len(llm.refused), "the summaries are charged to the agent"
    reads = [m for m in agent.transcript if m.get("role") == "tool"]
    assert len(reads) == FILES and all(len(m["content"]) >= FILE_CHARS for m in reads), "the transcript is kept whole"


async def test_a_configured_window_is_never_passed(tmp_path: Path) -> None:
    with ScriptedLLM(context_window=WINDOW) as llm:
        agent, events = await _run(tmp_path, llm, _key(llm, context_window=WINDOW))

    _check_report(agent, llm)
    assert llm.refused == [], "compacted before every request that would not fit"
    compacted = _compacted(events, agent.id)
    assert compacted and all(c.tokens_after < c.tokens_before for c in compacted)
    assert compacted[-1].compactions == len(compacted)
    assert all(SECRET.search(_text(r)) or True for r in llm.requests)
    assert isinstance(agent.compaction, Compaction)


async def test_an_unknown_window_is_learned_from_the_refusal(tmp_path: Path) -> None:
    with ScriptedLLM(context_window=WINDOW) as llm:
        agent, events = await _run(tmp_path, llm, _key(llm))

    _check_report(agent, llm)
    assert len(llm.refused) >= 1, "the provider refused once"
    compacted = _compacted(events, agent.id)
    assert compacted and compacted[0].model is not None


async def test_a_resumed_agent_sends_its_compacted_transcript_and_keeps_the_users_message(
    scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    """Refused as too long, the agent compacts (the user's message kept verbatim) and goes on; the
    hub dies mid-call; resumed, it sends the compacted transcript, not the whole one, which the
    store keeps."""
    root, data = dirs(tmp_path)
    for index in range(2):
        (root / f"part_{index}.txt").write_text(f"secret-{index}-{WORDS[index]}\n" + "lorem ipsum dolor. " * 420)

    def first(request: RecordedRequest) -> Reply:  # the window: room for 3000 tokens of work
        scripted_llm.context_window = estimate_tokens(request.messages, request.tools) + 3000
        return Reply(tool_calls=[call("read_file", path="part_0.txt")], delay_s=0.5)

    summary = "You read part_0.txt: secret-0-amber. The user asked you to mind the tests."
    scripted_llm.script(
        "[resume-c]",
        [
            first,
            Reply(text="Noted secret-0-amber.", tool_calls=[call("read_file", path="part_1.txt")]),
            Reply(text=summary),  # the summary, asked for after the refusal
            Reply(text="lost with the hub", delay_s=3),
            Reply(text="Secrets: amber, birch"),
        ],
    )
    async with Hub.open(root, data) as hub:
        agent = await hub.start("[resume-c] Read part_0.txt and part_1.txt; report their secrets.", model=MODEL)
        await until(lambda: len(scripted_llm.requests_for("[resume-c]")) == 1)
        await hub.send(agent.id, "Mind the tests.", MessageKind.instruction)
        await until(lambda: len(scripted_llm.requests_for("[resume-c]")) == 4, timeout_s=30)
        compacted = hub.view(agent.id)
    assert len(scripted_llm.refused) == 1 and compacted.compactions == 1

    async with Hub.open(root, data) as hub:
        assert hub.view(agent.id).state == "interrupted"
        await hub.resume(agent.id)
        done = await hub.wait_finished(agent.id)
        detail = await hub.agent(agent.id)

    assert done.state == "done" and done.report == "Secrets: amber, birch" and done.compactions == 1
    resumed = scripted_llm.requests_for("[resume-c]")[-1]
    sent = [str(m.get("content") or "") for m in resumed.messages]
    assert any(summary in text and "[Context compacted" in text for text in sent)
    assert any(text.endswith("\nMind the tests.") for text in sent), "the user's message is kept verbatim"
    assert not any("secret-0-amber\nlorem" in text for text in sent), "part_0's contents are summarised away"
    assert "secret-1-birch\nlorem" in sent[-1], "the latest turn is sent whole"
    whole = [str(m.get("content") or "") for m in detail.transcript]
    assert any(text.startswith("secret-0-amber\nlorem") for text in whole), "the store keeps everything"
    (mark,) = detail.compacted_at  # where the UI draws its marker: before the turn that read part_1
    assert "part_1.txt" in str(detail.transcript[mark]["tool_calls"])


async def test_the_user_asks_a_running_agent_to_compact_through_mcp(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    root, data = dirs(tmp_path)
    for index in range(2):
        (root / f"part_{index}.txt").write_text(f"secret-{index}-{WORDS[index]}\n" + "lorem ipsum dolor. " * 100)
    summary = "You read part_0.txt (secret-0-amber) and part_1.txt."
    scripted_llm.script(
        "[manual-c]",
        [
            Reply(tool_calls=[call("read_file", path="part_0.txt")]),
            Reply(tool_calls=[call("read_file", path="part_1.txt")], delay_s=1.0),
            Reply(text=summary),
            Reply(text="Secrets: amber, birch"),
        ],
    )
    async with Hub.open(root, data) as hub, Client(mcp_hub.build_server(hub)) as client:
        agent = await hub.start("[manual-c] Read part_0.txt and part_1.txt; report their secrets.", model=MODEL)
        await until(lambda: len(scripted_llm.requests_for("[manual-c]")) == 2)
        asked = await client.call_tool("compact", {"agent_id": agent.id})
        assert not asked.is_error
        done = await hub.wait_finished(agent.id)
        again = await client.call_tool("compact", {"agent_id": agent.id})

    assert done.state == "done" and done.compactions == 1
    assert again.is_error and "has finished (done)" in str(again.content[0])
    summarising, last = scripted_llm.requests_for("[manual-c]")[2:]
    assert summarising.messages[0]["content"] == SUMMARY_PROMPT and not summarising.tools
    assert "secret-0-amber" in str(summarising.messages[1]["content"])
    sent = [str(m.get("content") or "") for m in last.messages]
    assert any(summary in text for text in sent) and not any(t.startswith("secret-0-amber\nlorem") for t in sent)
    assert sent[-1].startswith("secret-1-birch\nlorem"), "the latest turn is sent whole"


@pytest.mark.parametrize("configured", [True, False], ids=["window configured", "window unknown"])
async def test_what_cannot_fit_even_compacted_fails_in_one_line(tmp_path: Path, configured: bool) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "huge.txt").write_text("secret-0-amber\n" + "x y z " * WINDOW)  # more than the window alone
    store = Store.open(tmp_path / "data" / "dispatch.db")
    with ScriptedLLM(context_window=WINDOW) as llm:
        llm.script("[huge]", [Reply(tool_calls=[ToolCall("read_file", {"path": "huge.txt"})])])
        key = _key(llm, context_window=WINDOW) if configured else _key(llm)
        try:
            async with AgentTree(root, Router(config(key), store)) as tree:
                grants = Grants(tools={"fs": ("read_file",)})
                agent = await tree.run(spec("[huge] Read huge.txt.", "m", grants=grants))
        finally:
            store.close()

    assert agent.state is AgentState.failed and agent.error is not None
    assert "\n" not in agent.error and "Traceback" not in agent.error
    assert agent.error.startswith("model 'm': even compacted, the request is ")
    window = f"of {WINDOW} tokens" if configured else "(not known: set context_window in the config)"
    assert agent.error.endswith(f"more than its context window {window}")
    assert llm.failures == []


def _turns(count: int) -> list[dict[str, Any]]:
    transcript: list[dict[str, Any]] = [{"role": "system", "content": "prompt"}, {"role": "user", "content": "task"}]
    for turn in range(count):
        ids = [f"c{turn}a", f"c{turn}b"]
        calls = [{"id": i, "type": "function", "function": {"name": "read_file", "arguments": "{}"}} for i in ids]
        transcript.append({"role": "assistant", "content": f"turn {turn}", "tool_calls": calls})
        transcript.extend({"role": "tool", "tool_call_id": i, "content": f"{i} " + "x" * 4000} for i in ids)
        if turn % 3 == 1:
            transcript.append(
                {"role": "user", "content": f"[instruction from the user · message m-{turn}]\nkeep {turn}"}
            )
    return transcript


def _pairs_whole(messages: list[dict[str, Any]]) -> bool:
    """Every tool result follows the assistant message that called it, and every call has its result."""
    open_calls: set[str] = set()
    for message in messages:
        if message["role"] == "tool":
            if message["tool_call_id"] not in open_calls:
                return False
            open_calls.discard(message["tool_call_id"])
            continue
        if open_calls:
            return False
        open_calls = {c["id"] for c in message.get("tool_calls") or []}
    return not open_calls


@pytest.mark.parametrize("limit", [2000, 6000, 20000])
def test_what_is_sent_keeps_tool_pairs_the_users_words_and_the_last_turn(limit: int) -> None:
    transcript = _turns(9)
    planned = plan(transcript, None, limit)
    assert planned is not None
    kept = kept_messages(transcript, None, planned.tail, limit)
    summarised = planned.shortened.model_copy(update={"summary": "S", "summarised": planned.tail, "kept": kept})
    last_turn = transcript[max(i for i, m in enumerate(transcript) if m["role"] == "assistant") :]
    for record in (planned.shortened, summarised):
        out = sent(transcript, record)
        assert _pairs_whole(out) and out[:2] == transcript[:2]
        assert out[-len(last_turn) :] == last_turn, "the latest turn is sent whole"
    shortened = sent(transcript, planned.shortened)
    assert len(str(shortened)) < len(str(transcript)) and len(shortened) == len(transcript)
    users = [m for m in transcript[: planned.tail] if m["role"] == "user" and m["content"].startswith("[instruction")]
    assert users and all(m in sent(transcript, summarised) for m in users[-len(kept) :]) and kept
    again = plan(transcript + _turns(2)[2:], summarised, limit)
    assert again is None or again.tail >= summarised.summarised, "a later compaction never un-summarises"


async def test_a_window_litellm_knows_comes_from_its_model_info_through_the_worker() -> None:
    """No context_window configured: litellm's model info answers, asked of the model worker."""
    meter = ContextMeter(config())
    assert await meter.window("openai/gpt-4o-mini") == 128000
    assert await meter.window("openai/scripted") is None, "a model litellm does not know: unknown"
    counted = await meter.count("openai/gpt-4o-mini", [{"role": "user", "content": "hello " * 100}])
    assert 90 <= counted <= 120, "litellm's tokenizer, not an estimate of four characters a token"


async def test_a_parent_asks_its_child_to_compact(tmp_path: Path) -> None:
    def compact_it(request: RecordedRequest) -> Reply:
        child_id = re.search(r"a-[0-9a-f]{8}", str(request.messages[-1]["content"]))
        assert child_id is not None
        return Reply(tool_calls=[ToolCall("compact_child", {"id": child_id.group(0)})], delay_s=0.2)

    model = ScriptedModel()
    model.script(
        "[cc-parent]",
        [
            Reply(tool_calls=[ToolCall("summon", {"task": "[cc-child] look twice"})]),
            compact_it,
            Reply(tool_calls=[ToolCall("wait", {})]),
            Reply(text="the child looked"),
        ],
    )
    model.script(
        "[cc-child]",
        [
            Reply(text="first look", tool_calls=[ToolCall("list_dir", {"path": "."})]),
            Reply(text="second look", tool_calls=[ToolCall("list_dir", {"path": "."})], delay_s=0.5),
            Reply(text="You listed the root twice."),  # the summary its parent asked for
            Reply(text="looked twice"),
        ],
    )
    (tmp_path / "root").mkdir()
    with model:
        async with AgentTree(tmp_path / "root", model) as tree, tree.events.subscribe() as stream:
            parent = await tree.run(spec("[cc-parent] delegate", "scripted"))
            events: list[Event] = []
            while True:
                try:
                    events.append(stream.receive_nowait())
                except Exception:
                    break

    assert parent.state is AgentState.done, parent.error
    (child,) = tree.children_of(parent.id)
    (compacted,) = _compacted(events, child.id)
    assert compacted.model == "scripted" and child.compaction is not None and child.compaction.count == 1
    last = model.requests_for("[cc-child]")[-1]
    assert "You listed the root twice." in str(last.messages[2]["content"]) and len(last.messages) < len(
        child.transcript
    )
