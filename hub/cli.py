"""The ``dispatch`` command: run a task from the terminal (more commands arrive with the hub).

Heavy modules (the tree, litellm) are imported inside the commands, so ``dispatch --help`` stays
quick. User errors print one clear line and exit non-zero, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="dispatch",
    help="Dispatch: a harness for fleets of AI coding agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Dispatch: a harness for fleets of AI coding agents."""


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="what the top agent should do")],
    model: Annotated[str, typer.Option("--model", "-m", help="litellm model name, e.g. openai/gpt-4o-mini")],
    root: Annotated[Path, typer.Option("--root", help="the project root the agents work in")] = Path("."),
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object instead")] = False,
    isolated: Annotated[bool, typer.Option("--isolated", help="fs and shell as stdio subprocesses")] = False,
) -> None:
    """Run a top agent (which may summon children) on TASK to completion and print its report."""
    from dispatch.hub.run_command import run_task

    if not root.is_dir():
        typer.echo(f"error: --root {root}: not a directory", err=True)
        raise typer.Exit(2)
    raise typer.Exit(run_task(task, model=model, root=root, json_output=json_output, isolated=isolated))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
