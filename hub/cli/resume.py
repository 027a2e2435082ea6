"""``dispatch resume AGENT``: continue an interrupted agent from its last persisted step.

When a hub runs on the data directory, the request goes to it (``POST /api/agents/ID/resume``
at the address in its lock file, with the token from the data directory) and the command returns
at once; follow it with ``dispatch logs -f``. When none runs, the agent (and its interrupted
descendants) resume in this process, shown line by line, until it finishes; Ctrl-C stops it
gracefully, interrupted again and resumable again.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import anyio

from dispatch.hub.api.auth import TOKEN_FILE
from dispatch.hub.cli.logs import ActivityLog
from dispatch.hub.errors import UserError
from dispatch.hub.events import AgentStateChanged
from dispatch.hub.service.lifecycle import HubInfo, running_hub, serve_until_signalled
from dispatch.hub.store.db import DB_NAME, Store
from dispatch.hub.store.records import Records

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 130
_STOPPED = ("done", "failed", "cancelled", "interrupted")


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _resume_remote(info: HubInfo, home: Path, agent_id: str) -> int:
    if not info.address:
        _err(f"error: a hub runs on {home} ({info.describe()}) but serves no API to resume through")
        return EXIT_FAILED
    token_file = home / TOKEN_FILE
    token = token_file.read_text().strip() if token_file.exists() else ""
    request = urllib.request.Request(
        f"{info.address.rstrip('/')}/api/agents/{agent_id}/resume",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            view = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        detail = json.loads(error.read() or b"{}").get("detail", error.reason)
        _err(f"error: {detail}")
        return EXIT_USAGE if error.code < 500 else EXIT_FAILED
    except OSError as error:
        _err(f"error: the hub at {info.address} did not answer: {error}")
        return EXIT_FAILED
    name, state = view.get("name", "?"), view.get("state")
    print(f"resumed {view.get('id', agent_id)} ({name}) in the hub at {info.address}: {state}")
    return EXIT_OK


async def _stored_root(home: Path, agent_id: str) -> Path | None:
    async with Store.open(home / DB_NAME) as store:
        row = await Records(store).agent_row(agent_id)
    return Path(row.root) if row is not None and row.root else None


async def _resume_here(agent_id: str, root: Path | None, home: Path) -> int:
    from dispatch.hub.service.hub import Hub  # the tree and its servers: only when resuming here

    root = root or await _stored_root(home, agent_id) or Path.cwd()
    async with Hub.open(root, home) as hub, hub.follow_events() as events:
        log = ActivityLog()
        for view in await hub.agents():
            log.learn(view.id, view.name, view.parent_id)
        try:
            await hub.resume(agent_id)
        except UserError as error:
            _err(f"error: {error}")
            return EXIT_USAGE

        async def watch() -> None:
            async for event in events:
                _err(log.line(event))
                changed = event.data
                if event.agent_id == agent_id and isinstance(changed, AgentStateChanged) and changed.state in _STOPPED:
                    return

        await serve_until_signalled(hub, serve=watch)
        final = hub.view(agent_id)
    if final.state == "done":
        print(final.report or "")
        return EXIT_OK
    if final.state == "interrupted":
        _err(f"stopped: {agent_id} is interrupted again; `dispatch resume {agent_id}` continues it")
        return EXIT_STOPPED
    _err(f"error: {final.error or final.reason or final.state}")
    return EXIT_STOPPED if final.state == "cancelled" else EXIT_FAILED


def resume_command(agent_id: str, *, root: Path | None, home: Path) -> int:
    """Resume through the running hub, or here when none runs; returns the exit code."""
    info = running_hub(home)
    if info is not None:
        return _resume_remote(info, home, agent_id)
    if not (home / DB_NAME).exists():
        _err(f"error: no hub has kept state in {home}; nothing to resume")
        return EXIT_USAGE
    try:
        return anyio.run(_resume_here, agent_id, root, home)
    except UserError as error:
        _err(f"error: {error}")
        return EXIT_USAGE
