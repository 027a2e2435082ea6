"""The README's offline quick start keeps working: its demo script, served by the scripted model,
drives `dispatch run` to the promised report and file."""

from __future__ import annotations

from pathlib import Path

from dispatch.hub.llm.scripted import load_scripts
from tests.fakes.scripted_llm import ScriptedLLM
from tests.test_cli_run import dispatch

DEMO = Path(__file__).parent / "fakes" / "demo_script.yaml"


def test_quickstart_demo(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    for script in load_scripts(DEMO):
        scripted_llm.add(script)
    task = "[demo] Write a hello-world script and check that it runs"

    done = dispatch("run", task, "--model", "openai/scripted", "--root", str(tmp_path))

    assert done.returncode == 0, done.stderr
    assert "Hello from Dispatch!" in done.stdout
    assert (tmp_path / "hello.py").read_text() == "print('Hello from Dispatch!')\n"
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert task in readme and "tests/fakes/demo_script.yaml" in readme
