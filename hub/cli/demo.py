"""``dispatch demo``: the hub served on a sample project, with a scripted model playing a short
multi-agent session, so a newcomer sees Dispatch work with no key, no config and no network.

The sample project (``configs/demo/project``) is laid out in a new folder (a temp one, or an
empty ``--root``), the hub's data directory is a temp one (the user's own hub and history are not
touched), and the model is the in-process :class:`~dispatch.hub.llm.scripted.ScriptedModel`
playing ``configs/demo/script.yaml``. The session: the dispatch agent of a chat summons a coder
that writes ``greet.py`` and another that writes and runs its test; while it waits on them, the
demo sends it a message (its delivery receipt shows in the UI); its report waits for your
approval (approved by itself after 20 seconds). Then the hub keeps serving until Ctrl-C.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from importlib.resources import as_file, files
from pathlib import Path

import anyio

from dispatch.hub.agents.spec import AgentState
from dispatch.hub.cli.serve import DEFAULT_HOST, EXIT_USAGE, Serving, serve_with
from dispatch.hub.llm.scripted import ScriptedModel
from dispatch.hub.service.hub import Hub
from dispatch.servers.hublink import MessageKind

TASK = "Add a greet() function with a test for it, and run the test."
MESSAGE = "Keep the greeting friendly, please."
DEMO_MODEL = "scripted-demo"
"""The model name the demo's agents show (the scripted model answers whatever it is called)."""


def _say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)


def lay_out_project(root: Path) -> None:
    """Copy the sample project into ``root`` (new, or an empty folder)."""
    with as_file(files("dispatch.configs") / "demo" / "project") as sample:
        shutil.copytree(sample, root, dirs_exist_ok=True)


async def play(hub: Hub) -> None:
    """Start the demo's chat, and message its dispatch agent once it waits on its children."""
    chat = await hub.create_chat("Demo: a greeting with a test")
    await hub.post_chat_message(chat.id, TASK)
    with anyio.move_on_after(60):
        while True:
            waiting = [a for a in await hub.agents() if a.state == AgentState.waiting_children.value]
            if waiting:
                await hub.send(waiting[0].id, MESSAGE, MessageKind.instruction)
                _say(f"sent {waiting[0].name} a message: {MESSAGE!r}")
                return
            await anyio.sleep(0.2)


def demo(root: Path | None, *, host: str = DEFAULT_HOST, port: int = 8421) -> int:
    """Serve the demo until a signal; the exit code."""
    base = Path(tempfile.mkdtemp(prefix="dispatch-demo-"))
    if root is None:
        root = base / "project"
    elif root.exists() and any(root.iterdir()):
        _say(f"error: --root {root}: not empty; the demo lays its sample project out in a new or empty folder")
        return EXIT_USAGE
    lay_out_project(root)
    with as_file(files("dispatch.configs") / "demo" / "script.yaml") as script:
        model = ScriptedModel.from_file(script)
    _say(f"a scripted model plays a short session on a sample project in {root.resolve()}")
    _say("no key is needed and nothing leaves this machine; see the README for a real model")
    serving = Serving(root, host, port, model=DEMO_MODEL, data_dir=base / "data", client=model, alongside=play)
    return serve_with(serving)
