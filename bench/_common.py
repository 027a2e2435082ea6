"""Helpers shared by the benchmarks: one stable line per figure, the process's memory, and the
helper processes they start (a free port, waiting until one answers, stopping it)."""

from __future__ import annotations

import resource
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

import httpx


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_healthy(url: str) -> None:
    """Return once ``url`` answers 200; RuntimeError after 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within 60 s")
