"""The garbage collector of a process that runs agents (``dispatch serve``, ``run``, ``mcp``).

CPython's full collection walks every object it tracks, with the event loop stopped. In a hub
running hundreds of agents that is the objects of every imported module as well as the agents'
own, and its pauses make the tail of every latency (events, the API, messages).

:func:`settle_heap` is called once a command has opened what it keeps for its whole life (modules,
classes, schemas, the config, the store): those objects are moved out of the collector's sight
(``gc.freeze``), so a full collection walks only the agents' objects; and the youngest generation
is collected every 5,000 net allocations instead of 700, so fewer objects are promoted towards the
full collection, which then comes less often. bench/README.md has what it changed.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION_THRESHOLD = 5000
"""Net allocations between collections of the youngest generation (CPython's default: 700)."""


def settle_heap() -> None:
    """Freeze what is alive now out of the collector's walks, and collect the young less often."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)
