"""Conditions of the generic rule kinds (``where:`` of ``match`` and ``threshold``).

A condition names one document field and exactly one operator::

    {field: user.effective.name, exists: true}
    {field: user.effective.name, not_equal_field: user.name}
    {field: event.action, in: [record.update]}
    {field: crm.record_count, gte: 1000}
    {field: crm.object.type, equals: customer}
    {field: user.email, prefix: admin@}

A rule's conditions all have to hold. They run twice, with the same meaning: as an
OpenSearch query (`query_clauses`, windowed rules and past ranges) and in Python
(`matches`, per-event rules on each indexed batch, and the exact windowed evaluation).
``not_equal_field`` compares two fields of one document, which a query cannot do without
scripts (the cluster may have no painless): the query asks only that the field exists
and Python decides. Conditions on fields of the nested ``crm.changes`` all apply to the
*same* change entry (``field in [iban, bic]`` and ``new exists`` = one change of an IBAN
or BIC with a new value). Fields the mapping normalizes compare case-insensitively.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from collector.detect import fields
from collector.detect.fields import FieldInfo

Scalar = str | int | float | bool
OPERATORS = ("equals", "in", "exists", "not_equal_field", "gte", "gt", "lte", "lt", "prefix")
_RANGE = ("gte", "gt", "lte", "lt")


class Condition(BaseModel):
    """One ``where:`` entry: a field and one operator."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1)
    exists: bool | None = None
    not_equal_field: str | None = None
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None
    prefix: str | None = Field(default=None, min_length=1)

    @field_validator("field", "not_equal_field")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None:
            fields.check_field(value)
        return value

    @field_validator("gte", "gt", "lte", "lt", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or (value is not None and not isinstance(value, int | float)):
            raise ValueError(f"expected a number, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [op for op in OPERATORS if self.value_of(op) is not None]
        if len(given) != 1:
            shown = ", ".join(given) if given else "none"
            raise ValueError(
                f"give exactly one operator besides field ({', '.join(OPERATORS)}); got {shown}"
            )
        info = self.info
        op = given[0]
        if op != "exists" and not info.searchable:
            raise ValueError(
                f"field {self.field} ({info.type}) is not searchable by value; only exists"
            )
        if op in _RANGE and not info.numeric:
            raise ValueError(f"{op}: field {self.field} is {info.type}, not a number")
        if op == "prefix" and not (info.keyword or info.type == "flat_object"):
            raise ValueError(f"prefix: field {self.field} is {info.type}, not text (keyword)")
        if op in ("equals", "in"):
            for value in self.values:
                _check_value(info, op, value)
        if op == "not_equal_field":
            other = fields.check_field(str(self.not_equal_field))
            if other.nested != info.nested:
                raise ValueError(
                    f"not_equal_field: {self.field} and {other.name} must both be inside "
                    f"the same nested object (or both outside one)"
                )
            if info.numeric != other.numeric:
                raise ValueError(
                    f"not_equal_field: {self.field} ({info.type}) and {other.name} "
                    f"({other.type}) are not comparable"
                )
        return self

    def value_of(self, operator: str) -> Any:
        return self.in_ if operator == "in" else getattr(self, operator)

    # Cached: the per-event rules ask each condition for both on every event (the model
    # is frozen, so neither can change).
    @cached_property
    def operator(self) -> str:
        return next(op for op in OPERATORS if self.value_of(op) is not None)

    @cached_property
    def info(self) -> FieldInfo:
        return fields.check_field(self.field)

    @property
    def values(self) -> list[Scalar]:
        """The values of ``equals`` / ``in`` (empty for other operators)."""
        if self.in_ is not None:
            return list(self.in_)
        return [self.equals] if self.equals is not None else []

    def describe(self) -> str:
        op = self.operator
        value = self.value_of(op)
        return f"{self.field} {op} {value}"


def _check_value(info: FieldInfo, op: str, value: Scalar) -> None:
    if info.numeric and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"{op}: field {info.name} is {info.type}, got {value!r} (not a number)")
    if info.type == "boolean" and not isinstance(value, bool):
        raise ValueError(f"{op}: field {info.name} is boolean, got {value!r}")
    if info.type == "ip":
        try:
            ipaddress.ip_network(str(value).strip(), strict=False)
        except ValueError:
            raise ValueError(
                f"{op}: field {info.name} is an IP address; {value!r} is not an address or CIDR"
            ) from None
    if info.type in fields.DATES:
        raise ValueError(f"{op}: field {info.name} is a date; compare dates with a window")


# -- the query ---------------------------------------------------------------------------


def _clause(cond: Condition) -> tuple[dict[str, Any] | None, bool]:
    """(query clause, negated) of one condition; None when Python alone decides."""
    info = cond.info
    name = cond.field
    op = cond.operator
    if op == "exists":
        return {"exists": {"field": name}}, not cond.exists
    if op == "not_equal_field":
        return {"exists": {"field": name}}, False
    if op in _RANGE:
        return {"range": {name: {op: cond.value_of(op)}}}, False
    if op == "prefix":
        prefix: dict[str, Any] = {"value": fields.normalize(info, cond.prefix)}
        if info.case_insensitive:
            prefix["case_insensitive"] = True
        return {"prefix": {name: prefix}}, False
    values = [fields.normalize(info, v) for v in cond.values]
    if info.type == "ip":
        values = [str(v).strip() for v in values]
    if info.case_insensitive:
        # `terms` has no case_insensitive option: one term clause per value.
        terms = [{"term": {name: {"value": v, "case_insensitive": True}}} for v in values]
        if len(terms) == 1:
            return terms[0], False
        return {"bool": {"should": terms, "minimum_should_match": 1}}, False
    if len(values) == 1:
        return {"term": {name: values[0]}}, False
    return {"terms": {name: values}}, False


Clauses = list[dict[str, Any]]


def query_clauses(conditions: Sequence[Condition]) -> tuple[Clauses, Clauses]:
    """(filter, must_not) clauses selecting the documents `conditions` can match."""
    must: list[dict[str, Any]] = []
    must_not: list[dict[str, Any]] = []
    nested: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for cond in conditions:
        clause, negated = _clause(cond)
        if clause is None:
            continue
        path = cond.info.nested
        if path is None:
            (must_not if negated else must).append(clause)
            continue
        group = nested.setdefault(path, ([], []))
        (group[1] if negated else group[0]).append(clause)
    for path, (inner, inner_not) in nested.items():
        must.append(
            {"nested": {"path": path, "query": {"bool": {"filter": inner, "must_not": inner_not}}}}
        )
    return must, must_not


# -- Python ------------------------------------------------------------------------------


def _lookup(node: Any, parts: Sequence[str]) -> list[Any]:
    """Every value at `parts` under `node`, lists flattened."""
    if not parts:
        if node is None:
            return []
        return [v for v in node if v is not None] if isinstance(node, list) else [node]
    if isinstance(node, list):
        return [v for item in node for v in _lookup(item, parts)]
    # dict first: documents are dicts, matched exactly before the (slow) ABC check
    if not isinstance(node, (dict, Mapping)):
        return []
    head = parts[0]
    if head in node:
        return _lookup(node[head], parts[1:])
    # flat_object keys may hold dots themselves ("crm.attributes.a.b")
    for size in range(2, len(parts) + 1):
        joined = ".".join(parts[:size])
        if joined in node:
            return _lookup(node[joined], parts[size:])
    return []


def values_at(doc: Mapping[str, Any], name: str) -> list[Any]:
    """The values of field `name` in a document (empty when absent)."""
    return _lookup(doc, fields.path_of(name))


def _comparable(info: FieldInfo, value: Any) -> Any:
    if info.numeric:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return value
        try:
            return float(str(value))
        except ValueError:
            return None
    if info.type == "ip":
        try:
            return ipaddress.ip_address(str(value).strip())
        except ValueError:
            return None
    if info.type == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    return fields.normalize(info, value)


def _equal(info: FieldInfo, found: Any, wanted: Scalar) -> bool:
    if info.type == "ip" and "/" in str(wanted):
        net = ipaddress.ip_network(str(wanted).strip(), strict=False)
        return found is not None and found in net
    return bool(found == _comparable(info, wanted))


def _holds(cond: Condition, doc: Mapping[str, Any], scope: str) -> bool:
    """Whether `cond` holds for `doc`; nested fields are read relative to `scope`."""
    info = cond.info
    relative = cond.field[len(scope) + 1 :] if scope else cond.field
    found = [_comparable(info, v) for v in values_at(doc, relative)]
    found = [v for v in found if v is not None]
    op = cond.operator
    if op == "exists":
        return bool(found) == bool(cond.exists)
    if not found:
        return False
    if op in ("equals", "in"):
        return any(_equal(info, f, w) for f in found for w in cond.values)
    if op == "prefix":
        wanted = str(fields.normalize(info, cond.prefix))
        return any(str(f).startswith(wanted) for f in found)
    if op == "not_equal_field":
        other_name = str(cond.not_equal_field)
        other = fields.check_field(other_name)
        rel = other_name[len(scope) + 1 :] if scope else other_name
        theirs = {_comparable(other, v) for v in values_at(doc, rel)}
        if info.case_insensitive or other.case_insensitive:
            mine = {str(v).lower() for v in found}
            theirs = {str(v).lower() for v in theirs if v is not None}
            return not (mine & theirs)
        return not (set(found) & theirs)
    bound = cond.value_of(op)
    checks = {
        "gte": lambda v: v >= bound,
        "gt": lambda v: v > bound,
        "lte": lambda v: v <= bound,
        "lt": lambda v: v < bound,
    }
    return any(checks[op](v) for v in found)


def matches(conditions: Iterable[Condition], doc: Mapping[str, Any]) -> bool:
    """Whether every condition holds for `doc` (nested ones within one entry)."""
    nested: dict[str, list[Condition]] = {}
    for cond in conditions:
        path = cond.info.nested
        if path is not None:
            nested.setdefault(path, []).append(cond)
        elif not _holds(cond, doc, ""):
            return False
    for path, group in nested.items():
        entries = values_at(doc, path)
        if not any(
            isinstance(entry, Mapping) and all(_holds(c, entry, path) for c in group)
            for entry in entries
        ):
            return False
    return True


def fields_named(conditions: Iterable[Condition]) -> list[str]:
    """Every field the conditions read (for `rules check --opensearch`)."""
    out: list[str] = []
    for cond in conditions:
        out.append(cond.field)
        if cond.not_equal_field:
            out.append(cond.not_equal_field)
    return list(dict.fromkeys(out))


def actions_named(conditions: Iterable[Condition]) -> list[str]:
    """``event.action`` values the conditions ask for (equals / in)."""
    out: list[str] = []
    for cond in conditions:
        if cond.field == "event.action":
            out.extend(str(v) for v in cond.values)
    return list(dict.fromkeys(out))
