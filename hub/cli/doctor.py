"""``dispatch doctor``: what this machine and project give Dispatch, and how to fix what is missing.

Its room: checks that only look (nothing is started or installed) and their report as text. It
checks the language servers (the languages detected in the project root, the server found for
each or why none, and how to install a missing one) and the sandbox (which layers work here, and
so how the shell runs). Each check is a function returning
:class:`Finding` s, so later checks (keys, sandbox) add a function, not a branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dispatch.servers.lsp.languages import LANGUAGES, plan_servers
from dispatch.servers.lsp.settings import LspSettings
from dispatch.servers.sandbox import SandboxProbe, SandboxSetting, probe_sandbox

__all__ = ["Finding", "check_language_servers", "check_sandbox", "run_doctor"]


@dataclass(frozen=True)
class Finding:
    """One line of the report: what was checked, what was found, and whether it is a problem."""

    topic: str
    text: str
    status: Literal["ok", "missing", "off", "changed", "failed"] = "ok"


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


def check_sandbox(probe: SandboxProbe | None = None, setting: SandboxSetting = "auto") -> list[Finding]:
    """A finding per sandbox layer (bubblewrap, Landlock, openat2, the process limit), and the
    shell's resulting mode. With ``sandbox: off`` a missing layer is not a problem."""
    found = probe or probe_sandbox()
    findings = [Finding(topic, text, status) for topic, text, status in found.findings()]
    if setting == "off":
        findings = [Finding(f.topic, f.text, "off" if f.status == "missing" else f.status) for f in findings]
        findings.append(Finding("shell", "sandbox: off in the config: every command is approved by the user", "off"))
    elif found.any_layer:
        findings.append(Finding("shell", f"commands run in the sandbox ({found.layers()})"))
    else:
        findings.append(
            Finding("shell", "disabled: neither bubblewrap nor Landlock (or set `sandbox: off`)", "missing")
        )
    return findings


def _section(title: str, findings: list[Finding]) -> list[str]:
    width = max(len(f.topic) for f in findings)
    return ["", title, *(f"  {f.status:<7}  {f.topic:<{width}}  {f.text}" for f in findings)]


def run_doctor(
    root: Path,
    settings: LspSettings | None = None,
    search_path: str | None = None,
    sandbox: list[Finding] | None = None,
    tool_servers: list[Finding] | None = None,
) -> tuple[str, int]:
    """The report as text, and the exit code: 0 when nothing is missing, 1 otherwise.
    ``sandbox``: the sandbox findings (:func:`check_sandbox`); None leaves the section out."""
    root = root.resolve()
    findings = check_language_servers(root, settings or LspSettings(), search_path)
    lines = [f"Dispatch doctor: {root}"]
    lines += _section("Language servers (for the lsp tools):", findings)
    if sandbox is not None:
        lines += _section("Sandbox (for the shell and fs tools):", sandbox)
        findings = findings + sandbox
    if tool_servers:  # dispatch.hub.cli.doctor_servers
        lines += _section("Outside MCP servers (mcp_servers) and the tools agents are shown:", tool_servers)
        findings = findings + tool_servers
    missing = [f for f in findings if f.status == "missing"]
    lines += ["", f"{len(missing)} missing; install them as shown." if missing else "Nothing is missing."]
    troubled = [f.topic for f in findings if f.status in ("changed", "failed")]
    lines += [f"Outside servers to look at: {', '.join(troubled)}."] if troubled else []
    missing += [f for f in findings if f.status in ("changed", "failed")]
    return "\n".join(lines), 1 if missing else 0
