"""``dispatch diff AGENT`` and ``dispatch rewind AGENT``: what an agent changed in the project's
files, and putting it back.

When a hub runs on the data directory, the request goes to it (``GET /api/agents/ID/changes``,
``POST /api/agents/ID/rewind``, at the address in its lock file, with the token from the data
directory), so a running agent is cancelled before its files are rewound. When none runs, the
store and the change store are read (and the files rewound) here. The diff is printed as it is,
for ``git apply`` or a pager; coloured on a terminal (unless ``NO_COLOR`` is set).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anyio

from dispatch.hub.api.auth import TOKEN_FILE
from dispatch.hub.errors import UserError
from dispatch.hub.service.lifecycle import HubInfo, running_hub
from dispatch.hub.store.db import DB_NAME

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_COLOURS = (("+++", "1"), ("---", "1"), ("diff --git", "1"), ("@@", "36"), ("+", "32"), ("-", "31"))


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class _Refused(Exception):
    """The hub refused the request (its detail) or could not be reached; the exit code to use."""

    def __init__(self, detail: str, code: int) -> None:
        super().__init__(detail)
        self.code = code


def _ask_hub(info: HubInfo, home: Path, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    if not info.address:
        raise _Refused(f"a hub runs on {home} ({info.describe()}) but serves no API to ask", EXIT_FAILED)
    token_file = home / TOKEN_FILE
    token = token_file.read_text().strip() if token_file.exists() else ""
    request = urllib.request.Request(
        f"{info.address.rstrip('/')}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        detail = json.loads(error.read() or b"{}").get("detail", error.reason)
        raise _Refused(str(detail), EXIT_USAGE if error.code < 500 else EXIT_FAILED) from None
    except OSError as error:
        raise _Refused(f"the hub at {info.address} did not answer: {error}", EXIT_FAILED) from None


async def _here(home: Path, agent_id: str, *, rewind: dict[str, bool] | None, own: bool) -> dict[str, Any]:
    from dispatch.hub.changes.tracker import ChangeTracker
    from dispatch.hub.service.changes import CHANGES_DIR, ChangeDesk
    from dispatch.hub.store.db import Store
    from dispatch.hub.store.records import Records

    async with Store.open(home / DB_NAME) as store:
        records = Records(store)
        desk = ChangeDesk(records, ChangeTracker(home / CHANGES_DIR, records), Path.cwd())
        if rewind is None:
            return (await desk.changes(agent_id, own=own)).model_dump()
        return (await desk.rewind(agent_id, **rewind)).model_dump()


def _call(home: Path, agent_id: str, *, rewind: dict[str, bool] | None = None, own: bool = False) -> dict[str, Any]:
    info = running_hub(home)
    if info is not None:
        if rewind is None:
            return _ask_hub(info, home, "GET", f"/api/agents/{agent_id}/changes?own={str(own).lower()}")
        return _ask_hub(info, home, "POST", f"/api/agents/{agent_id}/rewind", rewind)
    if not (home / DB_NAME).exists():
        raise _Refused(f"no hub has kept state in {home}; no agent has changed anything", EXIT_USAGE)
    try:
        return anyio.run(lambda: _here(home, agent_id, rewind=rewind, own=own))
    except UserError as error:
        raise _Refused(str(error), EXIT_USAGE) from None


def coloured(diff: str) -> str:
    """The diff with ANSI colours: headers bold, hunks cyan, additions green, deletions red."""
    lines: list[str] = []
    for line in diff.splitlines(keepends=True):
        colour = next((c for prefix, c in _COLOURS if line.startswith(prefix)), None)
        body = line.rstrip("\n")
        lines.append(line if colour is None else f"\x1b[{colour}m{body}\x1b[0m" + line[len(body) :])
    return "".join(lines)


def diff_command(agent_id: str, *, own: bool, home: Path) -> int:
    """Print the agent's diff; returns the exit code."""
    try:
        changes = _call(home, agent_id, own=own)
    except _Refused as refused:
        _err(f"error: {refused}")
        return refused.code
    if not changes["files"]:
        whose = "" if own else " (nor its descendants)"
        _err(f"agent {agent_id}{whose} has changed no files")
        return EXIT_OK
    diff = changes["diff"]
    tty = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    sys.stdout.write(coloured(diff) if tty else diff)
    sys.stdout.flush()
    return EXIT_OK


def rewind_command(agent_id: str, *, force: bool, undo: bool, home: Path) -> int:
    """Rewind the agent's changes (or undo its last rewind); returns the exit code."""
    try:
        done = _call(home, agent_id, rewind={"force": force, "undo": undo})
    except _Refused as refused:
        _err(f"error: {refused}")
        return refused.code
    files = done["files"]
    listed = ", ".join(files) if files else "none needed it"
    if done["undone"]:
        print(f"undid rewind {done['rewind_id']} of {agent_id}: {len(files)} files put back ({listed})")
    else:
        print(
            f"rewound {agent_id}: {len(files)} files put back ({listed}); `dispatch rewind {agent_id} --undo` undoes it"
        )
    return EXIT_OK
