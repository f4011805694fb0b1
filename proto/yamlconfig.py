"""Load a YAML config file into a pydantic model, reporting every error at once.

Both the agent and the collector validate their configs through this one function so
that operators see the same error shape everywhere:

    agent.yaml:12: sources.0.paths: field required

Each problem is one line naming the file, the line (when known) and the dotted key path.
The caller turns the returned problems into its own package's ConfigError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)

KeyPath = tuple[str | int, ...]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers on which line each key path starts."""


def _compose_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _compose_lines(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _compose_lines(item, (*path, index), lines)


def _line_for(path: Sequence[str | int], lines: Mapping[KeyPath, int]) -> int | None:
    # The deepest known ancestor: a missing key is reported at its parent's line.
    probe: KeyPath = tuple(path)
    while probe:
        if probe in lines:
            return lines[probe]
        probe = probe[:-1]
    return lines.get((), None)


def format_path(path: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def load_yaml(path: Path) -> tuple[Any, dict[KeyPath, int], list[str]]:
    """Read and parse a YAML file; returns (data, line index, problems)."""
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, {}, [f"{label}: config file not found"]
    except (OSError, UnicodeDecodeError) as exc:
        return None, {}, [f"{label}: cannot read config file: {exc}"]
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, {}, [f"{label}{where}: invalid YAML: {problem}"]
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _compose_lines(node, (), lines)
    return data, lines, []


def validate(path: Path, model: type[ModelT]) -> tuple[ModelT | None, list[str]]:
    """Return (config, []) or (None, problems), one line per problem."""
    data, lines, problems = load_yaml(path)
    if problems:
        return None, problems
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [
            f"{path}:1: (top level): expected a mapping of keys, got {type(data).__name__}"
        ]
    try:
        return model.model_validate(data, context={"config_dir": path.resolve().parent}), []
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
            line = _line_for(loc, lines)
            where = f"{path}:{line}" if line is not None else str(path)
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown key"
            elif message.startswith("Value error, "):
                message = message[len("Value error, ") :]
            out.append(f"{where}: {format_path(loc)}: {message}")
        return None, out
