"""``dispatch doctor``: what this machine and project give Dispatch, and how to fix what is missing.

Its room: checks that only look (nothing is started or installed) and their report as text. It
checks the language servers (the languages detected in the project root, the server found for
each or why none, and how to install a missing one) and the sandbox (which layers work here, and
so how the shell runs), and the models (which model a new chat uses, what each tag resolves to,
which keys are there), and whether traces are sent (OpenTelemetry) and where. Each check is a function returning
:class:`Finding` s, so later checks (keys, sandbox) add a function, not a branch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dispatch.hub.llm.defaults import KEY_VARIABLES, PROVIDER_DEFAULTS, DefaultModel, no_model_hint
from dispatch.hub.llm.models_config import ModelsConfig
from dispatch.hub.service.tracing import tracing_status
from dispatch.servers.lsp.languages import LANGUAGES, plan_servers
from dispatch.servers.lsp.settings import LspSettings
from dispatch.servers.sandbox import SandboxProbe, SandboxSetting, mode_in_force, probe_sandbox
from dispatch.servers.sandbox.choice import refusal

__all__ = ["Finding", "check_language_servers", "check_models", "check_sandbox", "check_tracing", "run_doctor"]


Status = Literal["ok", "missing", "off", "weaker", "changed", "failed"]
_SHELL_STATUS: dict[SandboxSetting, Status] = {"auto": "ok", "landlock": "weaker", "off": "off"}


@dataclass(frozen=True)
class Finding:
    """One line of the report: what was checked, what was found, and whether it is a problem."""

    topic: str
    text: str
    status: Status = "ok"


def check_language_servers(root: Path, settings: LspSettings, search_path: str | None = None) -> list[Finding]:
    """A finding per language detected (or configured): its server, or why none and the fix."""
    plans = plan_servers(root, settings, search_path)
    if not plans:
        known = ", ".join(f"{lang.key} ({', '.join(lang.markers)})" for lang in LANGUAGES)
        return [Finding("languages", f"none detected in {root}; known: {known}")]
    findings: list[Finding] = []
    for plan in plans:
        why = f"detected by {plan.detected_by}" if plan.detected_by else "configured, not detected"
        if plan.problem is not None:
            off = plan.from_config and plan.server is None  # `lsp: {go: false}`: wanted, not missing
            findings.append(Finding(plan.language.key, f"{why}; {plan.problem}", "off" if off else "missing"))
            continue
        origin = " (from the config)" if plan.from_config else ""
        command = " ".join(plan.command or ())
        findings.append(Finding(plan.language.key, f"{why}; server {plan.server}{origin}: {command}"))
    return findings


def check_models(
    config: ModelsConfig, chosen: DefaultModel | None, environ: Mapping[str, str] | None = None
) -> list[Finding]:
    """Which model a new chat or run uses (``chosen``, :meth:`Catalog.model_for`) and why, what each
    tag resolves to, and whether each key is there (configured, or its provider's variable set).
    Looks only: no call is made."""
    env = os.environ if environ is None else environ
    findings = [
        Finding("default", f"new chats and runs use {chosen.model} ({chosen.source})")
        if chosen is not None
        else Finding("default", f"no model: {no_model_hint()}", "missing")
    ]
    tags = dict.fromkeys(tag for key in config.keys for entry in key.models.values() for tag in entry.tags)
    for tag in tags:
        serving = [
            f"{name} on {key.name}"
            for key in config.ordered_keys()
            for name, entry in key.models.items()
            if tag in entry.tags
        ]
        findings.append(Finding(f"tag {tag}", ", then ".join(serving)))
    for key in config.keys:
        if key.key is not None:
            findings.append(Finding(f"key {key.name}", f"{key.provider}: {key.key_ref or 'given in the config'}"))
            continue
        variable = KEY_VARIABLES.get(key.provider)
        if variable is None:
            findings.append(Finding(f"key {key.name}", f"{key.provider}: litellm's own environment for it"))
        elif env.get(variable, "").strip():
            findings.append(Finding(f"key {key.name}", f"{key.provider}: {variable} is set"))
        else:
            findings.append(
                Finding(f"key {key.name}", f"{key.provider}: set {variable} or key: in the config", "missing")
            )
    if not config.keys:
        found = [variable for _, variable, _ in PROVIDER_DEFAULTS if env.get(variable, "").strip()]
        text = f"from the environment: {', '.join(found)}" if found else "none configured and none in the environment"
        findings.append(Finding("keys", text, "ok" if found else "missing"))
    return findings


def check_sandbox(probe: SandboxProbe | None = None, setting: SandboxSetting = "auto") -> list[Finding]:
    """A finding per sandbox layer (bubblewrap, Landlock, openat2, the process limit), and the
    shell's mode in force. A layer the setting does not use is not missing: bubblewrap under
    ``sandbox: landlock``, any under ``sandbox: off``; Landlock alone is ``weaker``."""
    found = probe or probe_sandbox()
    findings = [Finding(topic, text, status) for topic, text, status in found.findings()]
    unused: set[str] = (
        {"bubblewrap"} if setting == "landlock" else {f.topic for f in findings} if setting == "off" else set()
    )
    findings = [
        Finding(f.topic, f.text, "off" if f.status == "missing" and f.topic in unused else f.status) for f in findings
    ]
    status: Status = "missing" if refusal(setting, found) is not None else _SHELL_STATUS[setting]
    findings.append(Finding("shell", mode_in_force(setting, found).removeprefix("the shell is "), status))
    return findings


def check_tracing(env: Mapping[str, str] | None = None) -> list[Finding]:
    """Whether the hub sends OpenTelemetry traces, and where (the ``OTEL_*`` variables of ``env``)."""
    status, text = tracing_status(os.environ if env is None else env)
    return [Finding("traces", text, status)]


def _section(title: str, findings: list[Finding]) -> list[str]:
    width = max(len(f.topic) for f in findings)
    return ["", title, *(f"  {f.status:<7}  {f.topic:<{width}}  {f.text}" for f in findings)]


def run_doctor(
    root: Path,
    settings: LspSettings | None = None,
    search_path: str | None = None,
    sandbox: list[Finding] | None = None,
    tool_servers: list[Finding] | None = None,
    models: list[Finding] | None = None,
    online: list[Finding] | None = None,
    tracing: list[Finding] | None = None,
    cluster: list[Finding] | None = None,
) -> tuple[str, int]:
    """The report as text, and the exit code: 0 when nothing is missing, 1 otherwise.
    ``sandbox``, ``models``, ``online``, ``tracing``: those findings (:func:`check_sandbox`,
    :func:`check_models`, :func:`dispatch.hub.cli.doctor_online.check_keys_online`,
    :func:`check_tracing`); None leaves the section out."""
    root = root.resolve()
    languages = check_language_servers(root, settings or LspSettings(), search_path)
    lines = [f"Dispatch doctor: {root}"]
    findings: list[Finding] = []
    if models is not None:
        lines += _section("Models and keys (config models, or the environment):", models)
        findings += models
    if online is not None:
        lines += _section("Keys tried online (one one-token call each):", online)
        findings += online
    lines += _section("Language servers (for the lsp tools):", languages)
    findings += languages
    if sandbox is not None:
        lines += _section("Sandbox (for the shell and fs tools):", sandbox)
        findings = findings + sandbox
    if cluster is not None:  # dispatch.hub.cli.doctor_cluster
        lines += _section("Ray (execution.engine: ray, where agents' tool servers run):", cluster)
        findings = findings + cluster
    if tool_servers:  # dispatch.hub.cli.doctor_servers
        lines += _section("Outside MCP servers (mcp_servers) and the tools agents are shown:", tool_servers)
        findings = findings + tool_servers
    if tracing is not None:
        lines += _section("Traces (OpenTelemetry, the OTEL_* variables):", tracing)
        findings = findings + tracing
    missing = [f for f in findings if f.status == "missing"]
    lines += ["", f"{len(missing)} missing; install them as shown." if missing else "Nothing is missing."]
    troubled = [f.topic for f in findings if f.status in ("changed", "failed")]
    lines += [f"To look at: {', '.join(troubled)}."] if troubled else []
    missing += [f for f in findings if f.status in ("changed", "failed")]
    return "\n".join(lines), 1 if missing else 0
