"""The collector settings of a process that runs agents (in a child process, so the test run's own
collector is left alone)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json
from dispatch.hub.heap import YOUNG_GENERATION_THRESHOLD, settle_heap
import dispatch.hub.service.hub  # what a hub imports before it serves
before = {"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}
settle_heap()
kept = [object() for _ in range(3)]
young = [[n] for n in range(100)]  # made after: the collector still sees them
print(json.dumps({
    "before": before,
    "frozen": gc.get_freeze_count(),
    "tracked": len(gc.get_objects()),
    "threshold": gc.get_threshold(),
    "young_tracked": all(gc.is_tracked(item) for item in young),
    "expected_young": YOUNG_GENERATION_THRESHOLD,
}))
"""


def test_settling_freezes_what_the_process_has_loaded_and_collects_the_young_less_often() -> None:
    found = json.loads(subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout)
    assert found["before"]["frozen"] == 0
    assert found["frozen"] > 50_000  # the modules a hub imports: out of every later collection's walk
    assert found["tracked"] < found["frozen"] // 10  # a full collection now walks only what came after
    assert found["young_tracked"]
    assert found["threshold"][0] == found["expected_young"] > found["before"]["threshold"][0]
    assert found["threshold"][1:] == found["before"]["threshold"][1:]
