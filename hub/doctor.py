"""``dispatch doctor``: what this machine and project give Dispatch, and how to fix what is missing.

Its room: checks that only look (nothing is started or installed) and their report as text. Today
it checks the language servers: the languages detected in the project root, the server found for
each (or why none), and how to install a missing one. Each check is a function returning
:class:`Finding` s, so later checks (keys, sandbox) add a function, not a branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dispatch.hub.lsp.languages import LANGUAGES, plan_servers
from dispatch.hub.lsp.settings import LspSettings

__all__ = ["Finding", "check_language_servers", "run_doctor"]


@dataclass(frozen=True)
class Finding:
    """One line of the report: what was checked, what was found, and whether it is a problem."""

    topic: str
    text: str
    status: Literal["ok", "missing", "off"] = "ok"


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


def run_doctor(root: Path, settings: LspSettings | None = None, search_path: str | None = None) -> tuple[str, int]:
    """The report as text, and the exit code: 0 when nothing is missing, 1 otherwise."""
    root = root.resolve()
    findings = check_language_servers(root, settings or LspSettings(), search_path)
    width = max(len(f.topic) for f in findings)
    lines = [f"Dispatch doctor: {root}", "", "Language servers (for the lsp tools):"]
    lines += [f"  {f.status:<7}  {f.topic:<{width}}  {f.text}" for f in findings]
    missing = [f for f in findings if f.status == "missing"]
    lines += ["", f"{len(missing)} missing; install them as shown." if missing else "Nothing is missing."]
    return "\n".join(lines), 1 if missing else 0
