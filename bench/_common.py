"""Helpers shared by the benchmarks: one stable line per figure, and the process's memory."""

from __future__ import annotations

import resource
import statistics
from pathlib import Path


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The value at ``fraction`` (0..1) of ``sorted_values`` (nearest rank, no interpolation)."""
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def report(name: str, seconds: list[float]) -> None:
    """Print ``name``, the median, p90 and p99 of ``seconds`` in milliseconds, and n, on one line."""
    ms = sorted(s * 1000 for s in seconds)
    print(
        f"{name:<34} median {statistics.median(ms):9.3f} ms   p90 {percentile(ms, 0.9):9.3f} ms"
        f"   p99 {percentile(ms, 0.99):9.3f} ms   n={len(ms)}"
    )


def report_value(name: str, value: float, unit: str) -> None:
    """Print one measured figure (a total, not a distribution) on one line."""
    print(f"{name:<34} value  {value:9.3f} {unit}")


def rss_mib() -> float:
    """This process's resident set size now, in MiB (``VmRSS``; the peak where /proc is absent)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return peak_rss_mib()


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
