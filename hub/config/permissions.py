"""Paths outside the project root: which ones ``permissions.auto_allow`` covers, and adding one to
the project config file when the user answers a permission prompt with ``always``.

A path is covered by an entry when it is the entry or lies beneath it, both resolved (``~``
expanded, symlinks followed, ``..`` collapsed); a relative entry is relative to the project root.
:func:`add_auto_allow` edits ``<root>/.dispatch/config.yaml`` as text where it can (a new item
after the list's last one, or a new ``permissions`` section at the end), so the rest of the file,
comments included, stays as it was; only a flow-style list (``auto_allow: [/tmp]``) makes it
rewrite the file from its data, which drops the comments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import yaml

from dispatch.hub.config.files import Source
from dispatch.hub.config.project import CONFIG_NAME, project_dir
from dispatch.hub.errors import ConfigError
from dispatch.servers.paths import covers


def _resolve_against(path: str, root: Path) -> Path:
    """``path`` absolute and resolved: ``~`` expanded, relative to ``root`` when relative."""
    expanded = Path(os.path.expanduser(path))
    return (expanded if expanded.is_absolute() else root / expanded).resolve()


def covering_entry(path: str, entries: Iterable[str], root: Path) -> str | None:
    """The first entry of an auto-allow list that covers ``path``, or None."""
    target = _resolve_against(path, root)
    return next((entry for entry in entries if covers(_resolve_against(entry, root), target)), None)


def project_config_file(root: Path) -> Path:
    """``<root>/.dispatch/config.yaml``."""
    return project_dir(root) / CONFIG_NAME


def _listed(data: dict[str, Any]) -> list[Any] | None:
    permissions = data.get("permissions")
    if not isinstance(permissions, dict):
        return None
    allowed = cast(dict[str, Any], permissions).get("auto_allow")
    return cast(list[Any], allowed) if isinstance(allowed, list) else None


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _edited(text: str, source: Source, path: str) -> str | None:
    """The file with ``path`` added as text, or None when its layout needs a rewrite."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    item = json.dumps(path)  # a JSON string is a valid YAML double-quoted scalar
    data = source.data
    if "permissions" not in data:
        return "".join(lines) + f"permissions:\n  auto_allow:\n    - {item}\n"
    allowed = _listed(data)
    if isinstance(data["permissions"], dict) and "auto_allow" not in data["permissions"]:
        head = source.lines.get(("permissions",))
        if head is None or lines[head - 1].rstrip().endswith(("{}", "{")):
            return None
        first = next(
            (line for loc, line in sorted(source.lines.items()) if len(loc) == 2 and loc[0] == "permissions"), 0
        )
        indent = _indent(lines[first - 1]) if first > head else _indent(lines[head - 1]) + "  "
        lines.insert(head, f"{indent}auto_allow:\n{indent}  - {item}\n")
        return "".join(lines)
    if not allowed:
        return None
    last = source.lines.get(("permissions", "auto_allow", len(allowed) - 1))
    if last is None or not lines[last - 1].lstrip().startswith("- "):
        return None
    lines.insert(last, f"{_indent(lines[last - 1])}- {item}\n")
    return "".join(lines)


def _appended(data: dict[str, Any], path: str) -> dict[str, Any]:
    """``data`` with ``path`` added to its auto-allow list, the rest unchanged."""
    out = dict(data)
    permissions = dict(cast(dict[str, Any], data.get("permissions") or {}))
    permissions["auto_allow"] = [*(_listed(data) or []), path]
    out["permissions"] = permissions
    return out


def _parsed(file: Path, text: str) -> dict[str, Any] | None:
    try:
        return Source.read(file, text).data
    except ConfigError:
        return None


def add_auto_allow(root: Path, path: str) -> Path:
    """Append ``path`` to ``permissions.auto_allow`` in the project config file (creating the file
    and its folder if needed), keeping the rest of the file; returns the file. A path listed
    already is left alone. Raises ConfigError when the file is not valid YAML."""
    file = project_config_file(root)
    text = file.read_text(encoding="utf-8") if file.exists() else ""
    source = Source.read(file, text)
    if path in (_listed(source.data) or []):
        return file
    wanted = _appended(source.data, path)
    new = _edited(text, source, path)
    if new is None or _parsed(file, new) != wanted:
        new = yaml.safe_dump(wanted, sort_keys=False, allow_unicode=True)
    file.parent.mkdir(parents=True, exist_ok=True)
    temporary = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    temporary.write_text(new, encoding="utf-8")
    temporary.replace(file)
    return file
