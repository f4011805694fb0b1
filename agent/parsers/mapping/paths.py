"""Paths into a record: dotted names (direct dict lookups) or JMESPath expressions. Pure.

A dotted name (`actor.login`) is followed key by key, and a literal key containing dots
wins over nesting (`{"user.name": …}` before `{"user": {"name": …}}`), because many
loggers flatten their keys that way. Anything that needs more than that — an index, a
projection, a filter, a pipe, a function (`changes[*]`, `roles | [0]`, `@`) — is a
JMESPath expression, compiled once when the source's mapping is compiled. The dotted
form stays the fast path: most mappings never pay for an expression engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Characters a dotted name never contains but JMESPath syntax does. `@` is not among
# them: keys like "@timestamp" or OData's "x@OData.Community.Display.V1.FormattedValue"
# are plain names; JMESPath's current node is `@` alone or `@.` at the start.
_EXPRESSION_CHARS = frozenset("[]|`*(){}!&,'\"=<>$?:")


class PathError(ValueError):
    """A path that cannot be compiled (the message says why, on one line)."""


class EvaluationError(ValueError):
    """A JMESPath expression failed on a record (e.g. a function given the wrong type)."""


Getter = Callable[[Any], tuple[bool, Any]]


@dataclass(frozen=True, slots=True)
class Path:
    """A compiled path. `roots` are the dotted record paths it reads from: once a value
    was used, the record's keys under them are not repeated in `attributes`."""

    text: str
    roots: tuple[str, ...]
    get: Getter
    dotted: bool


def is_expression(text: str) -> bool:
    """Whether `text` needs JMESPath (anything beyond dotted names)."""
    stripped = text.strip()
    if stripped == "@" or stripped.startswith("@."):
        return True
    return any(char in _EXPRESSION_CHARS for char in stripped) or " " in stripped


def compile_path(text: str) -> Path:
    """Compile one path; PathError when it is empty or not a valid expression."""
    stripped = text.strip()
    if not stripped.strip("."):
        raise PathError("empty path")
    if not is_expression(stripped):
        return Path(stripped, (stripped,), _dotted_getter(stripped), True)
    # Imported here: a source without expressions never loads the JMESPath engine.
    import jmespath
    from jmespath.exceptions import JMESPathError

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

    return Path(stripped, tuple(dict.fromkeys(_roots(dict(expression.parsed)))), get, False)


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

    parts = path.split(".")
    if len(parts) == 2:  # the common nesting (`actor.login`), without lookup's loop
        head, tail = parts

        def get_two(record: Any) -> tuple[bool, Any]:
            if not isinstance(record, dict):
                return False, None
            if path in record:
                return True, record[path]
            node = record.get(head)
            if isinstance(node, dict) and tail in node:
                return True, node[tail]
            return False, None

        return get_two

    def get_path(record: Any) -> tuple[bool, Any]:
        if isinstance(record, dict) and path in record:
            return True, record[path]
        return lookup(record, path)

    return get_path


# Nodes whose first child is the data they work on (the rest is relative to it).
_SOURCE_FIRST = frozenset(
    {"index_expression", "projection", "value_projection", "filter_projection", "flatten", "pipe"}
)
# Nodes whose children are all read from the same record.
_ALL_CHILDREN = frozenset(
    {
        "function_expression",
        "multi_select_list",
        "multi_select_dict",
        "key_val_pair",
        "or_expression",
        "and_expression",
        "not_expression",
    }
)


def _roots(node: Mapping[str, Any]) -> list[str]:
    """The record paths a JMESPath AST reads (`join('.', [a, b.c])` → a, b.c;
    `changes[*].attr` → changes): what the expression consumes once its value is used.
    A filter's or projection's inner fields are relative to the items and not counted."""
    kind = node.get("type")
    children: list[Mapping[str, Any]] = node.get("children", [])
    if kind == "field":
        return [str(node["value"])]
    if kind == "subexpression":
        chain: list[str] = []
        for child in children:
            if child.get("type") == "field":
                chain.append(str(child["value"]))
                continue
            inner = _roots(child)
            if len(inner) == 1:
                chain.append(inner[0])
            break
        return [".".join(chain)] if chain else []
    if kind in _SOURCE_FIRST:
        return _roots(children[0]) if children else []
    if kind in _ALL_CHILDREN:
        return [root for child in children for root in _roots(child)]
    return []
