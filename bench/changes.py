"""What change tracking costs: snapshotting a project before an agent's first write, and the
latency it adds to each writing tool call.

In a project of ``--files`` files (100 to a folder, a git repository of the user's, one
``.gitignore``d build folder of as many files again, which costs nothing), prints:

* the first snapshot of the agent's write scope (the whole project) into a new shadow store, as
  an agent's first write pays it (every file hashed once);
* a later snapshot with nothing changed (git's stat cache: only what changed is hashed);
* one ``write_file`` through an in-process MCP session to the fs server, bare and inside the
  tracker's hook (its file snapshotted before and after, the files that differ), as the hub runs
  it, in that project and in one of 10 files, and the median difference;
* the hook of a shell command (the whole project snapshotted before and after) around one write.

``python -m bench.changes [--samples N] [--files F] [--quick]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client

from bench._common import report, report_value
from dispatch.hub.changes.shadow import ShadowRepo
from dispatch.hub.changes.tracker import ChangeTracker, Snapshots
from dispatch.servers.fs import server as fs


def make_project(root: Path, files: int, *, ignored: bool = True) -> Path:
    """``files`` small Python files, 100 a folder, committed in the user's git repository; and as
    many in an ignored ``build/`` folder when ``ignored``."""
    for index in range(files):
        folder = root / f"pkg{index // 1000}" / f"mod{index // 100}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index}.py").write_text(f"value = {index}\n" * 20)
        if ignored:
            build = root / "build" / f"b{index // 100}"
            build.mkdir(parents=True, exist_ok=True)
            (build / f"o{index}.o").write_text("object\n")
    (root / ".gitignore").write_text("build/\n")
    identity = ("-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), *identity, "commit", "-qm", "start"], check=True)
    return root


def first_snapshots(root: Path, home: Path, samples: int) -> tuple[list[float], list[float]]:
    """The first snapshot into a new store, and a later one with nothing changed, ``samples`` each."""
    first: list[float] = []
    again: list[float] = []
    for sample in range(samples):
        repo = ShadowRepo(home / f"store{sample}", root)
        started = time.perf_counter()
        repo.snapshot(["."])
        first.append(time.perf_counter() - started)
        started = time.perf_counter()
        repo.snapshot(["."])
        again.append(time.perf_counter() - started)
    return first, again


async def write_times(root: Path, home: Path, samples: int, tracked: bool) -> list[float]:
    """One ``write_file`` of a new content to a file in the project, bare or inside the hook."""
    tracker = ChangeTracker(home)
    recorded: list[Snapshots] = []
    hook = tracker.track("a-bench", root, ["."], recorded.append)
    target = "pkg0/mod0/f0.py"
    times: list[float] = []
    async with Client(fs.build_server(root)) as client:
        async with hook("fs", "write_file", {"path": target}):  # warm: the session, and the store's first snapshot
            await client.call_tool("write_file", {"path": target, "content": "warm\n"})
        for sample in range(samples):
            arguments = {"path": target, "content": f"sample = {sample}\n"}
            started = time.perf_counter()
            if tracked:
                async with hook("fs", "write_file", {"path": target}):
                    result = await client.call_tool("write_file", arguments)
            else:
                result = await client.call_tool("write_file", arguments)
            times.append(time.perf_counter() - started)
            assert not result.is_error
    assert not tracked or len(recorded) == samples + 1, "every tracked write is recorded"
    return times


async def command_times(root: Path, home: Path, samples: int) -> list[float]:
    """The hook of a shell command (the whole scope snapshotted before and after) around a write of
    one file done here: what tracking adds to a command."""
    tracker = ChangeTracker(home)
    recorded: list[Snapshots] = []
    hook = tracker.track("a-bench", root, ["."], recorded.append)
    target = root / "pkg0" / "mod0" / "f1.py"
    async with hook("shell", "run", {}):  # warm: the store's first snapshot
        target.write_text("warm\n")
    times: list[float] = []
    for sample in range(samples):
        started = time.perf_counter()
        async with hook("shell", "run", {}):
            target.write_text(f"sample = {sample}\n")
        times.append(time.perf_counter() - started)
    assert len(recorded) == samples + 1, "every command's write is recorded"
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--quick", action="store_true", help="a small run (the test suite's)")
    args = parser.parse_args()
    samples, files = (3, 200) if args.quick else (args.samples, args.files)
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        large = make_project(base / "large", files)
        small = make_project(base / "small", 10, ignored=False)
        first, again = first_snapshots(large, base / "first", max(3, samples // 6))
        report(f"changes, first snapshot, {files} files", first)
        report(f"changes, snapshot again, {files} files", again)
        for name, root in ((f"{files} files", large), ("10 files", small)):
            bare: list[float] = []
            tracked: list[float] = []
            for turn in range(2):  # interleaved, so both see the same load
                half = samples // 2 or 1
                bare += anyio.run(write_times, root, base / f"bare{turn}{root.name}", half, False)
                tracked += anyio.run(write_times, root, base / f"tracked{turn}{root.name}", half, True)
            report(f"changes, write_file, {name}", bare)
            report(f"changes, write_file tracked, {name}", tracked)
            added = statistics.median(tracked) - statistics.median(bare)
            report_value(f"changes, added per write, {name}", added * 1000, "ms")
            report(f"changes, command tracked, {name}", anyio.run(command_times, root, base / f"c{root.name}", samples))


if __name__ == "__main__":
    main()
