"""What the sandbox adds to one shell command, by the size of the project.

Prints, for a project of a few folders and of ``--dirs`` folders (each holding a nested git
repository every 500), the time of one ``run`` of ``true`` through an in-process MCP session to
the shell server, built as the hub builds it (bubblewrap and Landlock as this machine offers):
everything the sandbox does around a command (the walk for always-denied paths before and after
it, the mounts, the process limits, putting back what it changed) plus starting bwrap itself.

``python -m bench.shell_command [--samples N] [--dirs D] [--quick]``
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client

from bench._common import report
from dispatch.servers import shell
from dispatch.servers.sandbox import SandboxLauncher, probe_sandbox


def make_project(root: Path, dirs: int) -> Path:
    """A git repository with ``dirs`` folders of one file each, a nested repository every 500."""
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    for index in range(dirs):
        folder = root / f"pkg{index // 100}" / f"mod{index}"
        folder.mkdir(parents=True)
        (folder / "x.py").write_text("x = 1\n")
        if index % 500 == 499:
            subprocess.run(["git", "init", "-q", str(folder)], check=True)
    return root


async def command_times(root: Path, samples: int) -> list[float]:
    launcher = SandboxLauncher.create(root, [root], probe_sandbox())
    server = shell.build_server(root, launcher=launcher)
    times: list[float] = []
    async with Client(server) as client:
        await client.call_tool("run", {"command": "true"})  # warm: the session, the sandbox's first setup
        for _ in range(samples):
            started = time.perf_counter()
            result = await client.call_tool("run", {"command": "true"})
            times.append(time.perf_counter() - started)
            assert not result.is_error
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--dirs", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="a small run (the test suite's)")
    args = parser.parse_args()
    samples, dirs = (3, 200) if args.quick else (args.samples, args.dirs)
    if not probe_sandbox().any_layer:
        print("shell command  skipped: no sandbox layer on this machine")
        return
    with tempfile.TemporaryDirectory() as scratch:
        small = make_project(Path(scratch) / "small", 5)
        large = make_project(Path(scratch) / "large", dirs)
        report("shell command, project of 5 folders", anyio.run(command_times, small, samples))
        report(f"shell command, project of {dirs} folders", anyio.run(command_times, large, samples))


if __name__ == "__main__":
    main()
