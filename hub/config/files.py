"""Reading Dispatch's YAML files so that every mistake names the file, the field and the expectation.

A :class:`Source` is one parsed file: its data and, for error messages, the line of every field.
:func:`validate` turns a pydantic ``ValidationError`` into one :class:`ConfigError` whose lines read
``<file> line <n>: <field.path>: expected <what>, got <value>``. :func:`interpolate` replaces
``${NAME}`` with the environment variable (``$$`` is a literal ``$``); a missing variable is an
error naming the file and field. :func:`merge` overlays one file's data on another's, field by
field, remembering which file each field came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from dispatch.hub.errors import ConfigError, field_path
from dispatch.hub.llm.types import JsonDict

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

UNION_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "template-name", "inline-template"})
"""Segments pydantic puts in an error's location for union members: not fields, left out of paths."""
_ENV = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def display_path(path: Path | str) -> str:
    """A path as the user knows it: ``~/...`` under the home directory."""
    text = str(path)
    home = str(Path.home())
    return "~" + text[len(home) :] if text == home or text.startswith(home + os.sep) else text


def _flatten(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in get_args(annotation):
        yield from _flatten(arg)


def _model_names(model: type[BaseModel], seen: set[str]) -> set[str]:
    """Names of the models reachable from ``model``: pydantic puts them in the locations of
    errors inside unions, where they are not fields."""
    if model.__name__ not in seen:
        seen.add(model.__name__)
        for info in model.model_fields.values():
            for arg in _flatten(info.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    _model_names(arg, seen)
    return seen


def _clean(loc: Loc, tags: Collection[str]) -> Loc:
    return tuple(p for p in loc if not (isinstance(p, str) and (p in tags or "[" in p)))


def _line_index(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in cast(list[tuple[yaml.Node, yaml.Node]], node.value):
            if isinstance(key, yaml.ScalarNode):
                here = (*loc, str(key.value))
                _line_index(value, here, lines)
                lines[here] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(cast(list[yaml.Node], node.value)):
            _line_index(item, (*loc, index), lines)


@dataclass
class Source:
    """One YAML file: where it is, what it holds, and the line of each field in it."""

    path: str
    data: JsonDict
    lines: dict[Loc, int] = field(default_factory=dict[Loc, int])

    @classmethod
    def read(cls, path: Path | str, text: str | None = None) -> Source:
        """Parse a YAML file whose top level must be a mapping (an empty file is an empty one)."""
        shown = display_path(path)
        try:
            raw = Path(path).read_text(encoding="utf-8") if text is None else text
        except OSError as error:
            raise ConfigError(f"{shown}: cannot be read ({error.strerror or error})") from None
        loader = yaml.SafeLoader(raw)
        try:
            node = loader.get_single_node()
            data: object = cast(object, loader.construct_document(node)) if node is not None else None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ConfigError(f"{shown}{where}: not valid YAML: {problem}") from None
        finally:
            loader.dispose()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{shown}: expected a mapping of fields at the top level, got {_kind(data)}")
        lines: dict[Loc, int] = {}
        if node is not None:
            _line_index(node, (), lines)
        return cls(shown, cast(JsonDict, data), lines)

    def line_of(self, loc: Loc) -> int | None:
        """The line of the deepest part of ``loc`` that has one."""
        return next((self.lines[loc[:end]] for end in range(len(loc), 0, -1) if loc[:end] in self.lines), None)

    def where(self, loc: Loc) -> str:
        """``<file> line <n>``, or the file alone when no part of ``loc`` has a line."""
        line = self.line_of(loc)
        return self.path if line is None else f"{self.path} line {line}"


_KINDS: dict[type, str] = {dict: "a mapping", list: "a list", str: "a string", int: "a number", float: "a number"}


def _kind(value: object) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The field names allowed where ``loc`` points, walking nested models (empty when unknown)."""
    current: Any = model
    keyed = False  # the part before named a mapping of models (mcp_servers): this part is its key
    for part in loc:
        if keyed or not (isinstance(current, type) and issubclass(current, BaseModel)) or not isinstance(part, str):
            keyed = False
            continue
        info = current.model_fields.get(part)
        if info is None:
            return []
        annotation = info.annotation
        keyed = get_origin(annotation) is dict
        nested = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        current = next((a for a in nested if issubclass(a, BaseModel)), annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


_WORDING = (
    (re.compile(r"a valid dictionary or instance of \w+|a valid dictionary"), "a mapping"),
    (re.compile(r"a valid boolean(, unable to interpret input)?"), "true or false"),
    (re.compile(r"a valid (list|string|tuple)"), r"a \1"),
)


def _expectation(model: type[BaseModel], error: Mapping[str, Any], loc: Loc) -> tuple[str, bool]:
    """What was expected, in words, and whether the given value is worth showing after it."""
    kind, message = str(error["type"]), str(error["msg"])
    if kind == "missing":
        return "required field is missing", False
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        return "unknown field" + (f"; expected one of: {', '.join(allowed)}" if allowed else ""), False
    for prefix, replacement in (("Input should be ", "expected "), ("Value error, ", ""), ("Assertion failed, ", "")):
        if message.startswith(prefix):
            message = replacement + message[len(prefix) :]
            break
    for pattern, words in _WORDING:
        message = pattern.sub(words, message)
    return message, kind not in ("value_error", "assertion_error")


def _problems(model: type[BaseModel], raised: ValidationError) -> list[tuple[Loc, str]]:
    """One problem per field: errors of the members of one union are joined with "or", and a
    member's type error is dropped when another member has an error deeper inside."""
    tags = UNION_TAGS | _model_names(model, set())
    found: dict[Loc, list[tuple[bool, tuple[str, bool], Any]]] = {}
    for error in raised.errors():
        raw = error["loc"]
        loc = _clean(raw, tags)
        member = bool(raw) and isinstance(raw[-1], str) and not _clean(raw[-1:], tags)
        found.setdefault(loc, []).append((member, _expectation(model, error, loc), error.get("input")))
    problems: list[tuple[Loc, str]] = []
    for loc, entries in found.items():
        deeper = any(len(other) > len(loc) and other[: len(loc)] == loc for other in found)
        kept = [(text, show, given) for member, (text, show), given in entries if not (member and deeper)]
        if not kept:
            continue
        texts = list(dict.fromkeys(text for text, _, _ in kept))
        joined = texts[0] + "".join(" or " + t.removeprefix("expected ") for t in texts[1:])
        show, given = kept[0][1], kept[0][2]
        problems.append((loc, f"{joined}, got {_shown(given)}" if show else joined))
    return problems


def validate(model: type[M], data: Any, sources: Sequence[Source], owners: Mapping[Loc, int] | None = None) -> M:
    """``model`` validated from ``data``; a ConfigError naming file, line, field and expectation.

    ``owners`` maps a field path to the index in ``sources`` of the file it came from (see
    :func:`merge`); a field without an owner is blamed on the last source.
    """
    try:
        return model.model_validate(data)
    except ValidationError as raised:
        owners = owners or {}
        found: list[tuple[int, int, str]] = []
        for loc, problem in _problems(model, raised):
            owner = next((owners[loc[:end]] for end in range(len(loc), -1, -1) if loc[:end] in owners), -1)
            source = sources[owner]
            text = f"{source.where(loc)}: {field_path(loc)}: {problem}"
            found.append((owner % len(sources), source.line_of(loc) or 0, text))
        raise ConfigError("\n".join(text for *_, text in sorted(found))) from None


def interpolate(value: Any, source: Source, loc: Loc = ()) -> Any:
    """``value`` with every ``${NAME}`` in its strings replaced from the environment."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(
                    f"{source.where(loc)}: {field_path(loc)}: expected the environment variable {name} "
                    f"to be set (the value is {value!r})"
                )
            return os.environ[name]

        return _ENV.sub(replace, value)
    if isinstance(value, dict):
        return {k: interpolate(v, source, (*loc, str(k))) for k, v in cast(JsonDict, value).items()}
    if isinstance(value, list):
        return [interpolate(v, source, (*loc, i)) for i, v in enumerate(cast(list[Any], value))]
    return value


def merge(layers: Sequence[JsonDict], unions: frozenset[Loc] = frozenset()) -> tuple[JsonDict, dict[Loc, int]]:
    """Overlay mappings field by field (a later layer wins; lists are replaced, except the paths in
    ``unions``, which are concatenated without duplicates). Returns the data and, for every field
    path, the index of the layer it came from."""
    owners: dict[Loc, int] = {}

    def overlay(base: JsonDict, top: JsonDict, index: int, loc: Loc) -> JsonDict:
        out = dict(base)
        for key, value in top.items():
            here = (*loc, str(key))
            old = out.get(key)
            if isinstance(old, dict) and isinstance(value, dict):
                out[key] = overlay(cast(JsonDict, old), cast(JsonDict, value), index, here)
            elif here in unions and isinstance(old, list) and isinstance(value, list):
                out[key] = list(dict.fromkeys([*cast(list[Any], old), *cast(list[Any], value)]))
            else:
                out[key] = value
                for stale in [k for k in owners if k[: len(here)] == here]:
                    del owners[stale]
                _own(value, index, here, owners)
            owners.setdefault(here, index)
        return out

    data: JsonDict = {}
    for index, layer in enumerate(layers):
        data = overlay(data, layer, index, ())
    return data, owners


def _own(value: Any, index: int, loc: Loc, owners: dict[Loc, int]) -> None:
    owners[loc] = index
    if isinstance(value, dict):
        for key, item in cast(JsonDict, value).items():
            _own(item, index, (*loc, str(key)), owners)
    elif isinstance(value, list):
        for i, item in enumerate(cast(list[Any], value)):
            _own(item, index, (*loc, i), owners)
