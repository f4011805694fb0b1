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


def make_parser(overrides: Mapping[str, str]) -> Callable[[bytes], pb.AuditEvent | None]:
    """A parse function using the default mapping with `overrides` applied."""
    unknown = set(overrides) - FIELDS
    if unknown:
        raise ValueError(f"unknown schema fields: {sorted(unknown)}")
    mapping = {**DEFAULT_MAPPING, **overrides}

    def parse_line(line: bytes) -> pb.AuditEvent | None:
        return parse(line, mapping)

    return parse_line


def parse(line: bytes, mapping: Mapping[str, str] = DEFAULT_MAPPING) -> pb.AuditEvent | None:
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
    _apply_mapping(event, record, mapping)
    return event


def _parse_error(event: pb.AuditEvent, reason: str) -> pb.AuditEvent:
    event.flags.append("parse_error")
    event.parse_error = _clean(reason)
    return event


def _apply_mapping(
    event: pb.AuditEvent, record: dict[str, Any], mapping: Mapping[str, str]
) -> None:
    consumed: set[str] = set()
    flags: list[str] = []

    def field(name: str, setter: Callable[[Any], None], flag: str = "mapping_error") -> None:
        path = mapping[name]
        found, value = _lookup(record, path)
        if not found:
            return
        if value is None:  # explicit null: nothing to record, nothing to keep
            consumed.add(path)
            return
        try:
            setter(value)
        except (_Unusable, TimestampError):
            if flag not in flags:
                flags.append(flag)
            return
        consumed.add(path)

    def set_time(value: Any) -> None:
        event.time_unix_nano = parse_timestamp(value)

    def set_outcome(value: Any) -> None:
        outcome = _OUTCOMES.get(_scalar(value).strip().lower())
        if outcome is None:
            raise _Unusable("unknown outcome")
        event.outcome = outcome

    def set_str(target: Any, attr: str) -> Callable[[Any], None]:
        def setter(value: Any) -> None:
            setattr(target, attr, _clean(_scalar(value)))

        return setter

    def set_roles(value: Any) -> None:
        items = value if isinstance(value, list) else [value]
        event.user.roles.extend(_clean(_scalar(item)) for item in items)

    def set_ip(value: Any) -> None:
        text = _scalar(value).strip()
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise _Unusable("not an IP address") from None
        event.source.ip = text

    def set_port(value: Any) -> None:
        event.source.port = _unsigned(value, 65_535)

    def set_count(value: Any) -> None:
        event.record_count = _unsigned(value, _UINT64_MAX)

    def set_changes(value: Any) -> None:
        event.changes.extend(_changes(value))

    field("timestamp", set_time, "invalid_timestamp")
    field("action", set_str(event, "action"))
    field("outcome", set_outcome)
    field("user.id", set_str(event.user, "id"))
    field("user.name", set_str(event.user, "name"))
    field("user.email", set_str(event.user, "email"))
    field("user.roles", set_roles)
    field("source.ip", set_ip)
    field("source.port", set_port)
    field("source.device_id", set_str(event.source, "device_id"))
    field("source.user_agent", set_str(event.source, "user_agent"))
    field("session_id", set_str(event, "session_id"))
    field("object.type", set_str(event.object, "type"))
    field("object.id", set_str(event.object, "id"))
    field("object.name", set_str(event.object, "name"))
    field("changes", set_changes)
    field("record_count", set_count)
    field("message", set_str(event, "message"))

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


apply_mapping = _apply_mapping
"""Fill `event` from a record dict through a field → path mapping (used by `regex` too)."""


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
