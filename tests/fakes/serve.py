"""Run the scripted model server by hand, from a YAML script file, for an offline try of Dispatch.

``python -m tests.fakes.serve tests/fakes/demo_script.yaml --port 8765``, then point litellm at it
with ``OPENAI_BASE_URL=http://127.0.0.1:8765/v1`` and use the model ``openai/scripted``.

A script file is a list of agents, each ``{match: TEXT, steps: [...]}``; a step is
``{text: ...}``, ``{tool_calls: [{name: ..., arguments: {...}}]}`` (both may be given, with an
optional ``delay_s``), or ``{fail: STATUS, body: {...}}`` (:func:`dispatch.hub.llm.scripted.load_scripts`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dispatch.hub.errors import ConfigError
from dispatch.hub.llm.scripted import load_scripts
from tests.fakes.scripted_llm import ScriptedLLM


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.serve", description=__doc__)
    parser.add_argument("script", type=Path, help="a YAML script file")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    try:
        llm = ScriptedLLM(load_scripts(args.script))
    except ConfigError as error:
        sys.exit(f"error: {error}")
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
