"""Which document fields rules may name, derived from the strict events mapping.

`collector.documents.EVENTS_MAPPING` is the mapping the events template is built from,
so a rule can name exactly the fields a document can carry: anything else is refused
when the rules file is loaded. For each field this module knows its OpenSearch type, the
``nested`` object it lives in (``crm.changes``) and whether the mapping normalizes it
(`collector.documents.CASE_INSENSITIVE_FIELDS`, or a keyword ``normalizer``): rules
compare such fields case-insensitively — queries with ``case_insensitive`` term and
prefix clauses (the values are stored as written), documents' values lowercased on both
sides when Python decides.

``crm.attributes`` is a ``flat_object``: any ``crm.attributes.<name>`` is a keyword.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from collector.documents import CASE_INSENSITIVE_FIELDS, EVENTS_MAPPING

NUMERIC = frozenset(
    {"long", "integer", "short", "byte", "unsigned_long", "double", "float", "half_float",
     "scaled_float"}
)  # fmt: skip
DATES = frozenset({"date", "date_nanos"})
# Types a term, range or prefix query can search (text is analyzed; binary and
# index:false fields are stored only).
SEARCHABLE = frozenset({"keyword", "ip", "boolean", *NUMERIC, *DATES})


@dataclass(frozen=True)
class FieldInfo:
    """One document field as the mapping defines it."""

    name: str
    type: str
    nested: str | None = None  # the nested object path this field is inside
    case_insensitive: bool = False
    indexed: bool = True

    @property
    def numeric(self) -> bool:
        return self.type in NUMERIC

    @property
    def keyword(self) -> bool:
        return self.type == "keyword"

    @property
    def searchable(self) -> bool:
        return self.indexed and self.type in SEARCHABLE


def _walk(properties: Mapping[str, Any], prefix: str, nested: str | None) -> Iterator[FieldInfo]:
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        kind = spec.get("type", "object")
        if "properties" in spec:
            inner = path if kind == "nested" else nested
            yield from _walk(spec["properties"], f"{path}.", inner)
            continue
        yield FieldInfo(
            name=path,
            type=kind,
            nested=nested,
            case_insensitive=bool(spec.get("normalizer")) or path in CASE_INSENSITIVE_FIELDS,
            indexed=spec.get("index", True) is not False,
        )


@cache
def schema() -> dict[str, FieldInfo]:
    """Every leaf field of the events mapping, by dotted name."""
    return {info.name: info for info in _walk(EVENTS_MAPPING["properties"], "", None)}


def _flat_objects() -> list[str]:
    return [name for name, info in schema().items() if info.type == "flat_object"]


def lookup(name: str) -> FieldInfo | None:
    """The field `name`, or None when no document can carry it."""
    known = schema().get(name)
    if known is not None:
        return known
    for parent in _flat_objects():
        if name.startswith(parent + ".") and len(name) > len(parent) + 1:
            return FieldInfo(name=name, type="keyword")
    return None


def unknown_field_message(name: str) -> str:
    """One line: `name` is not a document field, and what it may have meant."""
    close = difflib.get_close_matches(name, list(schema()), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (
        f"unknown field {name!r}: not in the events template "
        f"(config/opensearch/index-template-events.json){hint}"
    )


@cache
def path_of(name: str) -> tuple[str, ...]:
    """A dotted field name split into its parts, once per name: rules read the same few
    fields of every event (the names come from the rules and the code, so few)."""
    return tuple(name.split("."))


def check_field(name: str) -> FieldInfo:
    """The field, or ValueError (a pydantic validator's message) when unknown."""
    info = lookup(name)
    if info is None:
        raise ValueError(unknown_field_message(name))
    return info


def normalize(info: FieldInfo, value: Any) -> Any:
    """A value as the index stores (and a query should search) it for this field."""
    if isinstance(value, bool):
        text: Any = "true" if value else "false"
        return text if info.type != "boolean" else value
    if info.keyword or info.type == "flat_object":
        text = str(value)
        return text.lower() if info.case_insensitive else text
    return value


def term(name: str, value: Any) -> dict[str, Any]:
    """A term clause for `name`, case-insensitive where the field compares so."""
    info = lookup(name)
    if info is not None and info.case_insensitive:
        return {"term": {name: {"value": value, "case_insensitive": True}}}
    return {"term": {name: value}}
