"""A hub in its own process, for the lifecycle tests (signals, crashes, the data-directory lock).

``python -m tests.hub_process --root R --data D --task T --model M [--deadline S] [--address A]
[--message MATCH=TEXT]`` opens a :class:`~dispatch.hub.service.hub.Hub`, starts a top agent on ``T``
and runs until signalled (:func:`~dispatch.hub.service.lifecycle.serve_until_signalled`, as ``dispatch
serve`` does). On stdout, one JSON object a line, flushed: ``{"ready": TOP_ID, "pid": PID}``, then
every event as the hub announces it (so it is committed) ``{"seq", "type", "agent", "data"}``, and
``{"ack": MESSAGE_ID, "agent": ID}`` once a message it sent (``--message``: to the first agent
whose task contains MATCH, when it spawns) is acknowledged. ``{"exit": CODE}`` last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio

from dispatch.hub.events import AgentSpawned
from dispatch.hub.service.hub import Hub
from dispatch.hub.service.lifecycle import serve_until_signalled
from dispatch.servers.hublink import MessageKind


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields, default=str) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> int:
    match, _, text = (args.message or "").partition("=")
    async with (
        Hub.open(Path(args.root), Path(args.data), address=args.address) as hub,
        hub.follow_events() as events,
        anyio.create_task_group() as group,
    ):

        async def relay() -> None:
            sent = False
            async for event in events:
                wire = event.model_dump(mode="json")
                emit(seq=event.seq, type=event.type, agent=event.agent_id, data=wire["data"])
                if match and not sent and isinstance(event.data, AgentSpawned) and match in event.data.task:
                    sent = True
                    group.start_soon(send, event.agent_id)

        async def send(agent_id: str) -> None:
            message_id = await hub.send(agent_id, text, MessageKind.context)
            emit(ack=message_id, agent=agent_id)

        group.start_soon(relay)
        top = await hub.start(args.task, model=args.model)
        emit(ready=top.id, pid=os.getpid())
        code = await serve_until_signalled(hub, deadline_s=args.deadline)
        group.cancel_scope.cancel()
    emit(exit=code)
    return code


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--model", default="openai/scripted")
    parser.add_argument("--deadline", type=float, default=10.0)
    parser.add_argument("--address", default=None)
    parser.add_argument("--message", default=None)
    sys.exit(anyio.run(main, parser.parse_args()))
