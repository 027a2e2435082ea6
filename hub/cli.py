"""The ``dispatch`` command: run a task from the terminal (more commands arrive with the hub).

Heavy modules (the tree, litellm) are imported inside the commands, so ``dispatch --help`` stays
quick. User errors print one clear line and exit non-zero, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from dispatch.hub.catalog import Catalog

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
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="litellm model name, e.g. openai/gpt-4o-mini")
    ] = None,
    root: Annotated[Path, typer.Option("--root", help="the project root the agents work in")] = Path("."),
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object instead")] = False,
    isolated: Annotated[bool, typer.Option("--isolated", help="fs and shell as stdio subprocesses")] = False,
    template: Annotated[str, typer.Option("--template", "-t", help="the top agent's template")] = "dispatch",
    skill: Annotated[list[str] | None, typer.Option("--skill", help="a skill to load too (repeatable)")] = None,
) -> None:
    """Run a top agent (which may summon children) on TASK to completion and print its report."""
    from dispatch.hub.run_command import run_task

    _check_root(root)
    code = run_task(
        task, model=model, root=root, json_output=json_output, isolated=isolated, template=template, skills=skill or []
    )
    raise typer.Exit(code)


def _check_root(root: Path) -> None:
    if not root.is_dir():
        typer.echo(f"error: --root {root}: not a directory", err=True)
        raise typer.Exit(2)


def _catalog(root: Path) -> Catalog:
    """The project's catalog, or exit 2 with the config error (no traceback)."""
    from dispatch.hub.catalog import Catalog
    from dispatch.hub.errors import UserError

    _check_root(root)
    try:
        return Catalog.load(root)
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


@app.command()
def templates(
    root: Annotated[Path, typer.Option("--root", help="the project whose templates to list")] = Path("."),
) -> None:
    """List the templates (built-in, yours, the project's) with the file each comes from."""
    from dispatch.hub.catalog_view import templates_text

    typer.echo(templates_text(_catalog(root)))


@app.command()
def skills(
    agent: Annotated[str | None, typer.Option("--agent", help="an agent (template) name")] = None,
    root: Annotated[Path, typer.Option("--root", help="the project whose skills to read")] = Path("."),
    orchestrator: Annotated[
        bool | None,
        typer.Option("--orchestrator/--subagent", help="which mapping (.o.txt or .txt); default: its template"),
    ] = None,
) -> None:
    """Show the skills an agent of that name would load, in order, with their scopes."""
    from dispatch.hub.catalog_view import skills_text
    from dispatch.hub.errors import UserError

    catalog = _catalog(root)
    try:
        typer.echo(skills_text(catalog, agent, orchestrator))
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


@app.command()
def doctor(
    root: Annotated[Path, typer.Option("--root", help="the project to check")] = Path("."),
) -> None:
    """Check what Dispatch needs: the project's languages and their language servers (found, or
    how to install them). Exits 1 when something is missing."""
    from dispatch.hub.doctor import run_doctor

    text, code = run_doctor(root, _catalog(root).config.lsp)
    typer.echo(text)
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
