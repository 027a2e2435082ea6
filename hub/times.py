"""Times as Dispatch keeps and shows them: POSIX seconds (a float) in the database and in events, an
ISO 8601 string in UTC, to the microsecond, in every view the interfaces return.

Seconds in the store because its hot tables (events, usage, agents) are written thousands of times
a second and read by range (the ledger's ``at >= ?``, a chat search's ``since``): a number
compares, sorts and indexes the same whatever its precision, where ISO strings sort right only
when every writer formats them alike. The model router keeps its own clock
(:mod:`dispatch.hub.llm.clock`), for tests that move time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BeforeValidator

__all__ = ["Instant", "iso", "now", "seconds"]


def now() -> float:
    """This moment, in POSIX seconds: what the store keeps."""
    return time.time()


def iso(at: float) -> str:
    """``at`` (POSIX seconds) as the views show it: ``2026-01-31T14:00:00.000000+00:00``."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")


def seconds(text: str) -> float:
    """An ISO 8601 date or date-time as POSIX seconds; one without an offset is taken as UTC.
    Raises ValueError when ``text`` is no such time."""
    moment = datetime.fromisoformat(text.strip())
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


def _shown(value: object) -> object:
    return iso(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


Instant = Annotated[str, BeforeValidator(_shown)]
"""A view's time: built from the store's seconds (or an ISO string), always an ISO string on the wire."""
