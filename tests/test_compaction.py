"""Long-running agents: an agent whose work outgrows its model's context window compacts what it
sends (never what is kept) and finishes, through the real litellm path, against a scripted
provider that refuses any request longer than its window."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from dispatch.hub.agents.compaction import SUMMARY_PROMPT, Compaction
from dispatch.hub.agents.spec import AgentState
from dispatch.hub.events import AgentCompacted, Event
from dispatch.hub.llm.router import Router
from dispatch.hub.llm.scripted import RecordedRequest, Reply, ToolCall
from dispatch.hub.policy.grants import Grants
from dispatch.hub.store.db import Store
from tests.fakes.scripted_llm import ScriptedLLM
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
    from dispatch.hub.agents.tree import AgentTree

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
