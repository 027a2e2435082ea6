"""Compaction: what an agent sends once its whole transcript no longer fits its model's window.

The transcript itself is never cut: it is what the store keeps and the interfaces show. A
:class:`Compaction` says what is *sent* instead, and :func:`sent` builds it from the whole
transcript, so the record (stored with the agent) is all a resumed agent needs to send the same:

    the system prompt and the task       always, as they are
    the summary                          of everything up to ``summarised``, written by a model
    the user's own messages              of that part, verbatim (newest first, within a share of the window)
    old tool results, cut short          from ``summarised`` up to ``shortened``
    the latest turns                     as they are

Planning (:func:`plan`) cuts only before an assistant message, so a tool call and its result are
never parted (providers refuse either alone). Cutting old tool results short costs no model call
and comes first; when that leaves too much, the older part is summarised (:data:`SUMMARY_PROMPT`
says what to keep), folded in pieces the summarising model can take. The idea is OpenHands'
condenser (the event log kept whole, a condensation event naming what the view forgets and the
summary that stands in for it) with Codex's checkpoint summary (a hand-off to the model that
continues) and Claude Code's clearing of old tool results before summarising.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from dispatch.hub.llm.context import estimate_tokens
from dispatch.hub.llm.images import as_text, has_images
from dispatch.hub.llm.types import JsonDict

HEAD = 2
"""The system prompt and the task: never compacted."""

KEEP_TAIL = 0.25
"""The share of the window the latest turns may keep as they are (always the last one whole)."""
KEEP_USER = 0.1
"""The share of the window the user's own messages of a summarised part may keep verbatim."""
PIECE = 0.5
"""The share of the window one summarising request may fill with transcript."""
SHORT_RESULT = 300
"""What is left of an old tool result cut short, in characters."""

SUMMARY_PROMPT = """\
You are compacting the working memory of an AI agent doing a software-engineering task. Its \
transcript no longer fits its model's context window: the part shown to you will be replaced by \
what you write, and the agent continues from your summary and its latest turns alone.

Write a hand-off for the agent, in plain text, addressed to it ("you"). Keep:
- the task and every instruction, correction or preference the user gave, in their words;
- what has been done: decisions made and why, and what was found (facts, names, numbers, results);
- every file read, written or edited, with what matters about it;
- the children it started: each one's id, task, state and what it reported;
- what remains: next steps and open questions.
Drop what is no longer needed: tool output already used, dead ends (one line each), chatter. Be \
precise and complete rather than short; never invent anything. If a summary of an earlier part \
is given, fold it in: your text replaces it.
"""


class Compaction(BaseModel):
    """What an agent sends in place of its whole transcript since it last compacted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    summary: str | None = None
    """The message standing in for ``transcript[HEAD:summarised]`` (None: nothing is summarised)."""
    summarised: int = HEAD
    kept: list[int] = Field(default_factory=list[int])
    """Indices before ``summarised`` sent verbatim after the summary: the user's own messages."""
    shortened: int = HEAD
    """Tool results from ``summarised`` up to here are sent cut short."""
    count: int = 0
    """How many times the agent has compacted."""
    marks: list[int] = Field(default_factory=list[int])
    """Where each compaction cut: the transcript index of the first message it left as it was."""


def _cut_short(message: JsonDict) -> JsonDict:
    content = message.get("content")
    if has_images(message):  # an older step's images: said, not sent again
        return {**message, "content": as_text(content) + "\n[the images are left out to fit the context window]"}
    if message.get("role") != "tool" or not isinstance(content, str) or len(content) <= 2 * SHORT_RESULT:
        return message
    left = len(content) - SHORT_RESULT
    note = f"\n[... {left} more characters left out to fit the context window; call the tool again if you need them]"
    return {**message, "content": content[:SHORT_RESULT] + note}


def sent(transcript: Sequence[JsonDict], compaction: Compaction | None) -> list[JsonDict]:
    """The messages sent to the model for ``transcript`` under ``compaction``."""
    if compaction is None:
        return list(transcript)
    out = list(transcript[:HEAD])
    if compaction.summary is not None:
        out.append({"role": "user", "content": compaction.summary})
        out.extend(transcript[i] for i in compaction.kept if i < len(transcript))
    start = compaction.summarised
    out.extend(_cut_short(m) for m in transcript[start : compaction.shortened])
    out.extend(transcript[max(start, compaction.shortened) :])
    return out


def from_user(message: JsonDict) -> bool:
    """A message the user sent the agent (as the inbox renders it), not a child's report."""
    content = message.get("content")
    if message.get("role") != "user" or not isinstance(content, str):
        return False
    head = content.split("\n", 1)[0]
    return head.startswith("[") and " from the user · message " in head


@dataclass(frozen=True)
class Plan:
    """Where to cut: the latest turns from ``tail`` on stay as they are."""

    tail: int
    shortened: Compaction
    """The compaction that only cuts old tool results short."""


def plan(transcript: Sequence[JsonDict], current: Compaction | None, limit: int) -> Plan | None:
    """Where to cut for a window (or ceiling) of ``limit`` tokens; None when nothing before the
    last turn is left to compact."""
    base = current or Compaction()
    first = max(HEAD, base.summarised) + 1
    turns = [i for i in range(first, len(transcript)) if transcript[i].get("role") == "assistant"]
    if not turns:
        return None
    tail = turns[-1]
    budget = int(limit * KEEP_TAIL)
    for start in reversed(turns[:-1]):
        if estimate_tokens(transcript[start:]) > budget:
            break
        tail = start
    update = {"shortened": max(tail, base.shortened), "count": base.count + 1, "marks": [*base.marks, tail]}
    shortened = base.model_copy(update=update)
    return Plan(tail, shortened)


def kept_messages(transcript: Sequence[JsonDict], current: Compaction | None, tail: int, limit: int) -> list[int]:
    """The user's own messages before ``tail`` sent verbatim: the newest always, older ones within a
    share of the window (the summary keeps what they said)."""
    budget, kept = int(limit * KEEP_USER), list[int]()
    for index in reversed(range(HEAD, tail)):
        if from_user(transcript[index]):
            budget -= estimate_tokens([transcript[index]])
            if budget < 0 and kept:
                break
            kept.insert(0, index)
    return kept


def pieces(transcript: Sequence[JsonDict], current: Compaction | None, tail: int, limit: int) -> list[str]:
    """The part to summarise as text, in pieces that each fit a summarising request."""
    base = current or Compaction()
    piece_chars = max(4000, int(limit * PIECE) * 4)
    result_chars = piece_chars // 4
    lines: list[str] = []
    for index in range(base.summarised, tail):
        lines.append(_render(index, transcript[index], result_chars))
    out: list[str] = []
    for line in lines:
        if out and len(out[-1]) + len(line) <= piece_chars:
            out[-1] += "\n\n" + line
        else:
            out.append(line[:piece_chars])
    return out


def _render(index: int, message: JsonDict, result_chars: int) -> str:
    role = str(message.get("role"))
    content = message.get("content")
    text = as_text(content)
    if role == "tool":
        if len(text) > result_chars:
            text = text[:result_chars] + f"\n[... {len(text) - result_chars} more characters]"
        return f"#{index} tool result:\n{text}"
    calls: list[JsonDict] = list(message.get("tool_calls") or [])
    functions = [c["function"] for c in calls if isinstance(c.get("function"), dict)]
    called = "".join(f"\n-> {f['name']}({f['arguments']})" for f in functions)
    who = {"assistant": "you", "user": "message"}.get(role, role)
    return f"#{index} {who}:\n{text}{called}".rstrip()


def summary_request(task: str, previous: str | None, piece: str) -> list[JsonDict]:
    """The messages of one summarising request: the prompt, then the task, the summary so far and a piece."""
    parts = [f"The agent's task:\n{task}"]
    if previous:
        parts.append(f"The summary of the part before:\n{previous}")
    parts.append(f"The part of its transcript to summarise:\n{piece}")
    return [{"role": "system", "content": SUMMARY_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]


def summary_message(summary: str, upto: int, children: str) -> str:
    """The message that stands in for the summarised part."""
    head = (
        f"[Context compacted: the first {upto} messages of your transcript no longer fit the model's "
        "context window; this summary of them stands in for them (the full transcript is kept).]"
    )
    text = f"{head}\n\n{summary.strip()}"
    if children:
        text += f"\n\nYour children now:\n{children}"
    return text
