"""Run the scripted model server by hand, from a YAML script file, for an offline try of Dispatch.

``python -m tests.fakes.serve tests/fakes/demo_script.yaml --port 8765``, then point litellm at it
with ``OPENAI_BASE_URL=http://127.0.0.1:8765/v1`` and use the model ``openai/scripted``.

A script file is a list of agents, each ``{match: TEXT, steps: [...]}``; a step is
``{text: ...}``, ``{tool_calls: [{name: ..., arguments: {...}}]}`` (both may be given, with an
optional ``delay_s``), or ``{fail: STATUS, body: {...}}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import yaml

from tests.fakes.scripted_llm import Fail, Reply, ScriptedLLM, Step, ToolCall


def parse_step(raw: dict[str, Any], where: str) -> Step:
    if "fail" in raw:
        return Fail(status=int(raw["fail"]), body=dict(raw.get("body", {})), delay_s=float(raw.get("delay_s", 0)))
    unknown = set(raw) - {"text", "tool_calls", "delay_s"}
    if unknown or not ({"text", "tool_calls"} & set(raw)):
        raise ValueError(f"{where}: a step has text and/or tool_calls (and delay_s), or fail; got {sorted(raw)}")
    calls = [ToolCall(name=c["name"], arguments=dict(c.get("arguments", {}))) for c in raw.get("tool_calls", [])]
    return Reply(text=raw.get("text"), tool_calls=calls, delay_s=float(raw.get("delay_s", 0)))


def load_scripts(llm: ScriptedLLM, path: Path) -> None:
    """Add every agent's script from the YAML file at ``path`` to ``llm``."""
    agents = yaml.safe_load(path.read_text())
    if not isinstance(agents, list):
        raise ValueError(f"{path}: expected a list of {{match, steps}} entries")
    for index, agent in enumerate(agents):
        where = f"{path}: entry {index + 1}"
        steps = [parse_step(step, f"{where}, step {n + 1}") for n, step in enumerate(agent["steps"])]
        llm.script(str(agent["match"]), steps, model=agent.get("model"))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.serve", description=__doc__)
    parser.add_argument("script", type=Path, help="a YAML script file")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    llm = ScriptedLLM()
    load_scripts(llm, args.script)
    llm.start(args.port)
    print(f"scripted model serving {args.script} at {llm.base_url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        llm.stop()
        for failure in llm.failures:
            print("failure:", failure)


if __name__ == "__main__":
    main()
