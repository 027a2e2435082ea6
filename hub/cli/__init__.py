"""The ``dispatch`` command: run a task from the terminal, serve the hub, and more.

Heavy modules (the tree, litellm) are imported inside the commands, so ``dispatch --help`` stays
quick. User errors print one clear line and exit non-zero, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from dispatch.hub.agents.catalog import Catalog
    from dispatch.hub.agents.spec import AgentSpec, Caps

app = typer.Typer(
    name="dispatch",
    help="Dispatch: a harness for fleets of AI coding agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstrings' line breaks are not kept mid-sentence
)


def _version(shown: bool) -> None:
    if shown:
        from importlib.metadata import version

        typer.echo(f"dispatch {version('dispatch-harness')}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="print the version and exit", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Dispatch: a harness for fleets of AI coding agents."""


@app.command()
def run(
    task: Annotated[str, typer.Argument(help="what the top agent should do; `-` reads it from stdin")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="litellm model name, e.g. openai/gpt-4o-mini")
    ] = None,
    root: Annotated[Path, typer.Option("--root", help="the project root the agents work in")] = Path("."),
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object instead")] = False,
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help="print each event as a JSON line as it happens, then a result line")
    ] = False,
    isolated: Annotated[bool, typer.Option("--isolated", help="fs and shell as stdio subprocesses")] = False,
    template: Annotated[str, typer.Option("--template", "-t", help="the top agent's template")] = "dispatch",
    skill: Annotated[list[str] | None, typer.Option("--skill", help="a skill to load too (repeatable)")] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="approve every checkpoint and outside-path request without asking")
    ] = False,
    budget: Annotated[
        float | None, typer.Option("--budget", help="US dollars the run may spend (the template's by default)")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="tokens (in + out) the run may use (the template's by default)")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="steps the top agent may take (the template's by default)")
    ] = None,
) -> None:
    """Run a top agent (which may summon children) on TASK to completion and print its report. The
    run is journaled in the data directory (dispatch logs, dispatch resume); checkpoints and requests
    for paths outside the project are asked in the terminal (refused when there is none). A run
    stopped by --budget, --max-tokens or --max-steps exits 1, saying which. With --jsonl, stdout
    has one JSON object a line as the run goes (the events of /api/events), the last
    `{"type": "result", ...}` with what --json prints."""
    from dispatch.hub.llm.client import begin_model_worker

    # litellm's import (seconds) starts before the config is even read: one worker now, the
    # config's number once it is known
    begin_model_worker(1)
    from dispatch.hub.agents.spec import Caps

    if json_output and jsonl:
        typer.echo("error: --json and --jsonl: give one of them", err=True)
        raise typer.Exit(2)
    if task == "-":
        task = _stdin_task()
    catalog = _catalog(root)
    spec = _top_spec(catalog, task, model, template, skill or [], isolated, Caps(budget, max_tokens, max_steps))
    begin_model_worker(catalog.config.limits.model_workers)
    from dispatch.hub.cli.run import run_task

    output = "jsonl" if jsonl else "json" if json_output else "text"
    raise typer.Exit(run_task(spec, root=root, output=output, yes=yes))


def _stdin_task() -> str:
    """The task read from stdin (``dispatch run -``), or exit 2 when there is none."""
    import sys

    task = "" if sys.stdin.isatty() else sys.stdin.read().strip()
    if not task:
        typer.echo("error: the task is `-` but stdin gave no text (pipe the task in)", err=True)
        raise typer.Exit(2)
    return task


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="the address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="the port (0: any free one)", min=0, max=65535)] = 8421,
    root: Annotated[Path, typer.Option("--root", help="the project root the agents work in")] = Path("."),
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="allow a --host that is not loopback (plain HTTP: trusted networks)")
    ] = False,
    deadline: Annotated[
        float, typer.Option("--deadline", help="seconds running steps may finish in after SIGINT/SIGTERM", min=0)
    ] = 30.0,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="the model or tag of new chats (default: the config's)")
    ] = None,
) -> None:
    """Serve the hub (HTTP API, WebSocket events, web UI) until SIGINT/SIGTERM; prints the URL with
    the token. A second signal exits at once."""
    from dispatch.hub.cli.serve import serve as serve_hub

    _check_root(root)
    raise typer.Exit(serve_hub(root, host=host, port=port, allow_remote=allow_remote, deadline_s=deadline, model=model))


@app.command()
def demo(
    port: Annotated[int, typer.Option("--port", help="the port (0: any free one)", min=0, max=65535)] = 8421,
    root: Annotated[
        Path | None, typer.Option("--root", help="a new or empty folder for the sample project (default: a temp one)")
    ] = None,
) -> None:
    """Serve the hub on a sample project, with a scripted model playing a short multi-agent session:
    no key, no config, nothing leaves this machine. Prints the URL to open; Ctrl-C stops it."""
    from dispatch.hub.cli.demo import demo as serve_demo

    raise typer.Exit(serve_demo(root, port=port))


def _top_spec(
    catalog: Catalog, task: str, model: str | None, template: str, skills: list[str], isolated: bool, caps: Caps
) -> AgentSpec:
    """The run's top agent, checked before the tree and the model worker load: an unknown template
    or skill, no model at all, a model whose provider's key is not set, or a cap that is not a
    positive number exits 2 in one line."""
    from dispatch.hub.errors import UserError
    from dispatch.hub.llm.defaults import unkeyed

    try:
        caps.check({"budget_usd": "--budget", "max_tokens": "--max-tokens", "max_steps": "--max-steps"})
        spec = catalog.top_spec(task, model=model, template=template, skills=skills, isolated=isolated, caps=caps)
        problem = unkeyed(catalog.config.models, spec.model)
    except UserError as error:
        spec, problem = None, str(error)
    if spec is None or problem is not None:
        typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2)
    return spec


def _check_root(root: Path) -> None:
    if not root.is_dir():
        typer.echo(f"error: --root {root}: not a directory", err=True)
        raise typer.Exit(2)


def _catalog(root: Path) -> Catalog:
    """The project's catalog, or exit 2 with the config error (no traceback)."""
    from dispatch.hub.agents.catalog import Catalog
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
    from dispatch.hub.cli.catalog_view import templates_text

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
    """Show what an agent of that name would load, in order: the project's AGENTS.md and CLAUDE.md, then
    its skills, with their scopes and files."""
    from dispatch.hub.cli.catalog_view import skills_text
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
    online: Annotated[
        bool, typer.Option("--online", help="also make one one-token call with each key (costs a few tokens)")
    ] = False,
) -> None:
    """Check what Dispatch needs: the model new chats use and the keys, the project's languages and
    their language servers (found, or how to install them), the sandbox for the shell, and the
    outside MCP servers of the config (started to list their tools, compared with the pinned lists),
    and whether traces are sent (OpenTelemetry) and where, and with execution.engine ray the Ray
    cluster (its nodes, CPUs, resources and labels). With --online, each key is tried with one
    cheap call. Exits 1 when something is missing or failed."""
    from dispatch.hub.cli.doctor import check_models, check_sandbox, check_tracing, run_doctor
    from dispatch.hub.cli.doctor_cluster import check_cluster
    from dispatch.hub.cli.doctor_servers import check_tool_servers
    from dispatch.hub.store.db import DB_NAME

    catalog = _catalog(root)
    config = catalog.config
    servers = check_tool_servers(config.mcp_servers, _data_dir(None) / DB_NAME) if config.mcp_servers else None
    sandbox = check_sandbox(setting=config.sandbox)
    chosen = catalog.model_for("dispatch")
    models = check_models(config.models, chosen)
    tried = None
    if online:
        import anyio

        from dispatch.hub.cli.doctor_online import check_keys_online

        tried = anyio.run(check_keys_online, config.models, chosen)
    cluster = check_cluster(config.execution)
    text, code = run_doctor(
        root,
        config.lsp,
        sandbox=sandbox,
        tool_servers=servers,
        models=models,
        online=tried,
        tracing=check_tracing(),
        cluster=cluster,
    )
    typer.echo(text)
    raise typer.Exit(code)


def _data_dir(data_dir: Path | None) -> Path:
    from dispatch.hub.store.db import data_dir as default_data_dir

    return (data_dir or default_data_dir()).expanduser()


@app.command()
def logs(
    agent: Annotated[str | None, typer.Argument(help="an agent's id or name; all agents when omitted")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new events")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="the hub's data directory")] = None,
) -> None:
    """The activity log of the hub's agents (from the stored events); errors name the agent chain,
    the tool and its arguments. Tracebacks are in hub.log in the data directory."""
    from dispatch.hub.cli.logs import logs_command

    raise typer.Exit(logs_command(agent, follow=follow, home=_data_dir(data_dir)))


@app.command()
def resume(
    agent: Annotated[
        str,
        typer.Argument(help="the id of an interrupted agent, or of one failed by a setup problem (a key, the config)"),
    ],
    root: Annotated[Path | None, typer.Option("--root", help="the project root (default: the agent's)")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="the hub's data directory")] = None,
) -> None:
    """Continue an interrupted agent (and its interrupted children), or one a missing key or a config
    mistake failed once that is fixed, from its last step: through the running hub when there is
    one, else here until it finishes."""
    from dispatch.hub.cli.resume import resume_command

    if root is not None:
        _check_root(root)
    raise typer.Exit(resume_command(agent, root=root, home=_data_dir(data_dir)))


@app.command()
def diff(
    agent: Annotated[str, typer.Argument(help="the agent's id")],
    own: Annotated[bool, typer.Option("--own", help="the agent alone, not its descendants")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="the hub's data directory")] = None,
) -> None:
    """Print the unified diff of what the agent and its descendants changed in the project's files
    (coloured on a terminal)."""
    from dispatch.hub.cli.changes import diff_command

    raise typer.Exit(diff_command(agent, own=own, home=_data_dir(data_dir)))


@app.command()
def rewind(
    agent: Annotated[str, typer.Argument(help="the agent's id")],
    force: Annotated[bool, typer.Option("--force", help="overwrite files someone changed since")] = False,
    undo: Annotated[bool, typer.Option("--undo", help="undo the agent's last rewind instead")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="the hub's data directory")] = None,
) -> None:
    """Put back the files the agent and its descendants changed, as they were before it started (a
    running agent is cancelled first). Refused, naming the files, when someone changed one since."""
    from dispatch.hub.cli.changes import rewind_command

    raise typer.Exit(rewind_command(agent, force=force, undo=undo, home=_data_dir(data_dir)))


@app.command()
def mcp(
    root: Annotated[
        Path | None,
        typer.Option("--root", help="the project root (default: the running hub's, else the current directory)"),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="top agents' model or tag (when it starts the hub)")
    ] = None,
) -> None:
    """The hub's MCP tools over stdio, for Claude Desktop and other MCP clients: attaches to the
    running hub, or starts one in the background first (it outlives the client; `dispatch stop`
    stops it)."""
    from dispatch.hub.cli.mcp import run_mcp

    if root is not None:
        _check_root(root)
    raise typer.Exit(run_mcp(root, model))


@app.command()
def stop(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="the hub's data directory (default: $DISPATCH_HOME)")
    ] = None,
) -> None:
    """Stop the hub serving the data directory, gracefully: running steps finish, the rest is
    interrupted and can be resumed. Says so when no hub runs. The model host (which keeps litellm
    loaded for the next command) stops too."""
    from dispatch.hub.cli.background import stop_hub
    from dispatch.hub.errors import UserError
    from dispatch.hub.llm.model_host import stop_host

    home = _data_dir(data_dir)
    host = stop_host()
    if host is not None:
        typer.echo(f"stopped the model host (pid {host})")
    try:
        stopped = stop_hub(home)
    except UserError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"stopped {stopped}" if stopped else f"no hub runs on {home}")


def main() -> None:
    app()
