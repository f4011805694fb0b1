"""Paths into a record: dotted names (direct dict lookups) or JMESPath expressions. Pure.

A dotted name (`actor.login`) is followed key by key, and a literal key containing dots
wins over nesting (`{"user.name": …}` before `{"user": {"name": …}}`), because many
loggers flatten their keys that way. Anything that needs more than that — an index, a
projection, a filter, a pipe, a function (`changes[*]`, `roles | [0]`, `@`) — is a
JMESPath expression, compiled once when the source's mapping is compiled. The dotted
form stays the fast path: most mappings never pay for an expression engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

# Characters a dotted name never contains but JMESPath syntax does.
_EXPRESSION_CHARS = frozenset("[]|@`*(){}!&,'\"=<>$?:")


class PathError(ValueError):
    """A path that cannot be compiled (the message says why, on one line)."""


class EvaluationError(ValueError):
    """A JMESPath expression failed on a record (e.g. a function given the wrong type)."""


Getter = Callable[[Any], tuple[bool, Any]]


@dataclass(frozen=True, slots=True)
class Path:
    """A compiled path. `root` is the dotted prefix the path reads from: once a value was
    used, the record's keys under it are not repeated in `attributes`."""

    text: str
    root: str
    get: Getter
    dotted: bool


def is_expression(text: str) -> bool:
    """Whether `text` needs JMESPath (anything beyond dotted names)."""
    return any(char in _EXPRESSION_CHARS for char in text) or " " in text.strip()


def compile_path(text: str) -> Path:
    """Compile one path; PathError when it is empty or not a valid expression."""
    stripped = text.strip()
    if not stripped.strip("."):
        raise PathError("empty path")
    if not is_expression(stripped):
        return Path(stripped, stripped, _dotted_getter(stripped), True)
    try:
        expression = jmespath.compile(stripped)
    except JMESPathError as exc:
        reason = " ".join(str(exc).split()).removeprefix("Invalid jmespath expression: ")
        raise PathError(f"invalid JMESPath expression {stripped!r}: {reason}") from None

    def get(record: Any) -> tuple[bool, Any]:
        try:
            value = expression.search(record)
        except JMESPathError as exc:
            raise EvaluationError(" ".join(str(exc).split())) from None
        return value is not None, value

    return Path(stripped, _root(stripped), get, False)


def lookup(record: Any, path: str) -> tuple[bool, Any]:
    """Follow a dotted path; a literal key containing dots wins over nesting."""
    node: Any = record
    parts = path.split(".")
    while parts:
        if not isinstance(node, dict):
            return False, None
        for take in range(len(parts), 0, -1):
            key = ".".join(parts[:take])
            if key in node:
                node = node[key]
                parts = parts[take:]
                break
        else:
            return False, None
    return True, node


def _dotted_getter(path: str) -> Getter:
    if "." not in path:

        def get_key(record: Any) -> tuple[bool, Any]:
            if isinstance(record, dict) and path in record:
                return True, record[path]
            return False, None

        return get_key

    def get_path(record: Any) -> tuple[bool, Any]:
        if isinstance(record, dict) and path in record:
            return True, record[path]
        return lookup(record, path)

    return get_path


def _root(expression: str) -> str:
    """The dotted names an expression starts with (`changes[*].attr` → `changes`): the
    part of the record it consumes. Empty when it starts otherwise (`@`, a function)."""
    end = len(expression)
    for index, char in enumerate(expression):
        if char in _EXPRESSION_CHARS or char.isspace():
            end = index
            break
    return expression[:end].strip(".")
