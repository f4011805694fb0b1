"""Record values as text, keeping what type the source gave them. Pure.

JSON is read with `parse_float=Decimal`, so a number is an int or a Decimal and keeps
its exact digits. A value's type travels with a field change (FieldChange.*_type) so the
document holds a number where the source wrote one; null never becomes the text "null".
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from proto.v1 import audit_pb2 as pb


class UnusableValue(ValueError):
    """A mapped value has the wrong shape for its target; it stays in attributes."""


def scalar_text(value: Any) -> str:
    """The text of a string, boolean or number; UnusableValue for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):  # constants from YAML, results of JMESPath functions
        return repr(value) if value == value and abs(value) != float("inf") else str(value)
    raise UnusableValue(f"expected a scalar, got {json_type(value)}")


def key_text(value: Any) -> str | None:
    """How a value is compared with the keys of a `values` table or a `when` list:
    as text (true/false in lower case); None for objects and arrays, which match nothing."""
    try:
        return scalar_text(value)
    except UnusableValue:
        return None


def json_text(value: Any) -> str:
    """A scalar's text, or the compact JSON of an object or array."""
    if isinstance(value, str | bool | int | Decimal | float):
        return scalar_text(value)
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def typed_text(value: Any) -> tuple[str, pb.FieldChange.ValueType.ValueType]:
    """(text, type) of a non-null value, for a FieldChange side."""
    if isinstance(value, str):
        return value, pb.FieldChange.VALUE_TYPE_STRING
    if isinstance(value, bool):
        return scalar_text(value), pb.FieldChange.VALUE_TYPE_BOOLEAN
    if isinstance(value, int | Decimal | float):
        if isinstance(value, Decimal | float) and not _finite(value):
            return str(value), pb.FieldChange.VALUE_TYPE_STRING
        return scalar_text(value), pb.FieldChange.VALUE_TYPE_NUMBER
    return json_text(value), pb.FieldChange.VALUE_TYPE_JSON


def json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _finite(value: Decimal | float) -> bool:
    if isinstance(value, Decimal):
        return value.is_finite()
    return value == value and abs(value) != float("inf")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else str(value)
    return str(value)
