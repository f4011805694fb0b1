"""JSON-lines parser: one JSON object per line → one AuditEvent. Pure.

The default mapping matches what the CRM application writes (`event`, `user.id`,
`source_ip`, …). A source's `mapping` overrides single entries: keys are schema fields
(`FIELDS`), values dotted paths into the record (`actor.username`). Whatever the mapping
does not consume is kept in `attributes` under its dotted path, so nothing is dropped.

Nothing here raises on bad input: a line that is not a JSON object still becomes an
event, flagged "parse_error" with the raw line in `original`. A mapped value of the
wrong shape (an IP that is not an IP, roles that are not a list, …) is flagged
"mapping_error" and stays in `attributes`; an unusable timestamp is flagged
"invalid_timestamp". Invalid UTF-8 is decoded with U+FFFD and flagged "invalid_utf8".
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from agent.parsers.categorize import categorize
from agent.parsers.timestamps import TimestampError, parse_timestamp
from proto.v1 import audit_pb2 as pb

NAME = "jsonlines"

DEFAULT_MAPPING: Mapping[str, str] = {
    "timestamp": "timestamp",
    "action": "event",
    "outcome": "outcome",
    "user.id": "user.id",
    "user.name": "user.name",
    "user.email": "user.email",
    "user.roles": "user.roles",
    "source.ip": "source_ip",
    "source.port": "source_port",
    "source.device_id": "device",
    "source.user_agent": "user_agent",
    "session_id": "session_id",
    "object.type": "object.type",
    "object.id": "object.id",
    "object.name": "object.name",
    "changes": "changes",
    "record_count": "record_count",
    "message": "message",
}
FIELDS = frozenset(DEFAULT_MAPPING)

_OUTCOMES = {
    "success": pb.OUTCOME_SUCCESS,
    "succeeded": pb.OUTCOME_SUCCESS,
    "failure": pb.OUTCOME_FAILURE,
    "failed": pb.OUTCOME_FAILURE,
}
_UINT64_MAX = 2**64 - 1


class _Unusable(ValueError):
    """A mapped value has the wrong shape; the value stays in attributes."""


Setter = Callable[[pb.AuditEvent, Any], None]


@dataclass(frozen=True, slots=True)
class _Field:
    path: str
    nested: bool  # the path has dots: literal keys and nesting must both be tried
    setter: Setter
    flag: str


MappingPlan = tuple[_Field, ...]
"""A field → path mapping compiled once per source (`compile_mapping`)."""


def make_parser(overrides: Mapping[str, str]) -> Callable[[bytes], pb.AuditEvent | None]:
    """A parse function using the default mapping with `overrides` applied."""
    unknown = set(overrides) - FIELDS
    if unknown:
        raise ValueError(f"unknown schema fields: {sorted(unknown)}")
    plan = compile_mapping({**DEFAULT_MAPPING, **overrides})

    def parse_line(line: bytes) -> pb.AuditEvent | None:
        return parse(line, plan)

    return parse_line


def parse(line: bytes, plan: MappingPlan | None = None) -> pb.AuditEvent | None:
    """One line (without its newline) → one event; None for a blank line."""
    if not line.strip():
        return None
    event = pb.AuditEvent()
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text = line.decode("utf-8", "replace")
        event.flags.append("invalid_utf8")
    event.original = _clean(text)
    try:
        record = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return _parse_error(event, f"invalid JSON: {exc.msg} at column {exc.colno}")
    except (ValueError, RecursionError) as exc:
        return _parse_error(event, f"invalid JSON: {_one_line(str(exc))}")
    if not isinstance(record, dict):
        return _parse_error(event, f"expected a JSON object, got {_json_type(record)}")
    apply_mapping(event, record, _DEFAULT_PLAN if plan is None else plan)
    return event


def _parse_error(event: pb.AuditEvent, reason: str) -> pb.AuditEvent:
    event.flags.append("parse_error")
    event.parse_error = _clean(reason)
    return event


# -- setters: (event, mapped value) → event filled, or _Unusable / TimestampError


def _set_time(event: pb.AuditEvent, value: Any) -> None:
    event.time_unix_nano = parse_timestamp(value)


def _set_outcome(event: pb.AuditEvent, value: Any) -> None:
    outcome = _OUTCOMES.get(_scalar(value).strip().lower())
    if outcome is None:
        raise _Unusable("unknown outcome")
    event.outcome = outcome


def _set_str(*attrs: str) -> Setter:
    *parents, name = attrs

    def setter(event: pb.AuditEvent, value: Any) -> None:
        target: Any = event
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, _clean(_scalar(value)))

    return setter


def _set_roles(event: pb.AuditEvent, value: Any) -> None:
    items = value if isinstance(value, list) else [value]
    event.user.roles.extend(_clean(_scalar(item)) for item in items)


def _set_ip(event: pb.AuditEvent, value: Any) -> None:
    text = _scalar(value).strip()
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise _Unusable("not an IP address") from None
    event.source.ip = text


def _set_port(event: pb.AuditEvent, value: Any) -> None:
    event.source.port = _unsigned(value, 65_535)


def _set_count(event: pb.AuditEvent, value: Any) -> None:
    event.record_count = _unsigned(value, _UINT64_MAX)


def _set_changes(event: pb.AuditEvent, value: Any) -> None:
    event.changes.extend(_changes(value))


# In the order they are applied; the flag is what an unusable value raises.
_SETTERS: tuple[tuple[str, Setter, str], ...] = (
    ("timestamp", _set_time, "invalid_timestamp"),
    ("action", _set_str("action"), "mapping_error"),
    ("outcome", _set_outcome, "mapping_error"),
    ("user.id", _set_str("user", "id"), "mapping_error"),
    ("user.name", _set_str("user", "name"), "mapping_error"),
    ("user.email", _set_str("user", "email"), "mapping_error"),
    ("user.roles", _set_roles, "mapping_error"),
    ("source.ip", _set_ip, "mapping_error"),
    ("source.port", _set_port, "mapping_error"),
    ("source.device_id", _set_str("source", "device_id"), "mapping_error"),
    ("source.user_agent", _set_str("source", "user_agent"), "mapping_error"),
    ("session_id", _set_str("session_id"), "mapping_error"),
    ("object.type", _set_str("object", "type"), "mapping_error"),
    ("object.id", _set_str("object", "id"), "mapping_error"),
    ("object.name", _set_str("object", "name"), "mapping_error"),
    ("changes", _set_changes, "mapping_error"),
    ("record_count", _set_count, "mapping_error"),
    ("message", _set_str("message"), "mapping_error"),
)


def compile_mapping(mapping: Mapping[str, str]) -> MappingPlan:
    """The plan for a complete field → path `mapping` (every schema field mapped)."""
    return tuple(
        _Field(mapping[name], "." in mapping[name], setter, flag) for name, setter, flag in _SETTERS
    )


_DEFAULT_PLAN = compile_mapping(DEFAULT_MAPPING)


def apply_mapping(event: pb.AuditEvent, record: dict[str, Any], plan: MappingPlan) -> None:
    """Fill `event` from a record dict through a compiled mapping (used by `regex` too)."""
    consumed: set[str] = set()
    flags: list[str] = []
    for spec in plan:
        path = spec.path
        # the common case first: the path is a key of the record itself
        if path in record:
            value = record[path]
        elif not spec.nested:
            continue
        else:
            found, value = _lookup(record, path)
            if not found:
                continue
        if value is None:  # explicit null: nothing to record, nothing to keep
            consumed.add(path)
            continue
        try:
            spec.setter(event, value)
        except (_Unusable, TimestampError):
            if spec.flag not in flags:
                flags.append(spec.flag)
            continue
        consumed.add(path)

    category = categorize(event.action) if event.action else None
    if category is not None:
        event.event_category.extend(category.event_category)
        event.event_type.extend(category.event_type)
        event.audit_category = category.audit_category
        if event.outcome == pb.OUTCOME_UNSPECIFIED:
            event.outcome = category.implied_outcome

    for key, value in _flatten(record, ""):
        if not _is_consumed(key, consumed):
            event.attributes[_clean(key)] = _clean(_json_text(value))
    event.flags.extend(flags)


def _lookup(record: dict[str, Any], path: str) -> tuple[bool, Any]:
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


def _flatten(value: dict[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            yield from _flatten(item, f"{path}.")
        else:
            yield path, item


def _is_consumed(key: str, consumed: set[str]) -> bool:
    if key in consumed:
        return True
    return any(key.startswith(f"{path}.") for path in consumed)


def _changes(value: Any) -> list[pb.FieldChange]:
    if not isinstance(value, list):
        raise _Unusable("changes must be a list")
    out = []
    for item in value:
        if not isinstance(item, dict) or "field" not in item:
            raise _Unusable("each change needs a field")
        change = pb.FieldChange(field=_clean(_scalar(item["field"])))
        # Absent means "not recorded"; an explicit null means "was/became empty".
        if "old" in item:
            change.old_value = _clean(_value_text(item["old"]))
        if "new" in item:
            change.new_value = _clean(_value_text(item["new"]))
        out.append(change)
    return out


def _unsigned(value: Any, maximum: int) -> int:
    if isinstance(value, bool):
        raise _Unusable("a boolean is not a count")
    if isinstance(value, str) and value.strip().isdecimal():
        value = int(value.strip())
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= maximum:
        raise _Unusable("not an unsigned integer in range")
    return value


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    raise _Unusable(f"expected a scalar, got {_json_type(value)}")


def _value_text(value: Any) -> str:
    return "" if value is None else _json_text(value)


def _json_text(value: Any) -> str:
    if isinstance(value, str | bool | int | Decimal):
        return _scalar(value)
    return json.dumps(value, default=float, ensure_ascii=False, separators=(",", ":"))


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _clean(text: str) -> str:
    """Protobuf strings must be valid UTF-8; JSON escapes can smuggle in lone surrogates."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())
