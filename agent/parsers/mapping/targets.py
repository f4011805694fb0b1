"""The schema fields a mapping can fill, and how a mapped value fills each. Pure.

A setter takes the event and the (non-null) mapped value and either fills the event or
raises UnusableValue / TimestampError; the value then stays in `attributes` and the
event is flagged with the target's flag.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from agent.parsers._common import clean
from agent.parsers.mapping.values import UnusableValue, scalar_text, typed_text
from agent.parsers.timestamps import parse_timestamp
from proto.v1 import audit_pb2 as pb

Setter = Callable[[pb.AuditEvent, Any], None]

_OUTCOMES = {
    "success": pb.OUTCOME_SUCCESS,
    "succeeded": pb.OUTCOME_SUCCESS,
    "failure": pb.OUTCOME_FAILURE,
    "failed": pb.OUTCOME_FAILURE,
}
OUTCOME_NAMES = ("success", "failure")
_UINT64_MAX = 2**64 - 1


def _set_time(event: pb.AuditEvent, value: Any) -> None:
    event.time_unix_nano = parse_timestamp(value)


def _set_outcome(event: pb.AuditEvent, value: Any) -> None:
    outcome = _OUTCOMES.get(scalar_text(value).strip().lower())
    if outcome is None:
        raise UnusableValue("unknown outcome")
    event.outcome = outcome


def _set_str(*attrs: str) -> Setter:
    *parents, name = attrs

    def setter(event: pb.AuditEvent, value: Any) -> None:
        target: Any = event
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, clean(scalar_text(value)))

    return setter


def _set_roles(attr: str) -> Setter:
    def setter(event: pb.AuditEvent, value: Any) -> None:
        items = value if isinstance(value, list) else [value]
        # Check every item first: a half-filled list would hide the unusable rest.
        roles = [clean(scalar_text(item)) for item in items if item is not None]
        getattr(event, attr).roles.extend(roles)

    return setter


def _set_ip(event: pb.AuditEvent, value: Any) -> None:
    text = scalar_text(value).strip()
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise UnusableValue("not an IP address") from None
    event.source.ip = text


def _set_port(event: pb.AuditEvent, value: Any) -> None:
    event.source.port = unsigned(value, 65_535)


def _set_count(event: pb.AuditEvent, value: Any) -> None:
    event.record_count = unsigned(value, _UINT64_MAX)


def _set_changes(event: pb.AuditEvent, value: Any) -> None:
    event.changes.extend(changes(value))


def changes(value: Any) -> list[pb.FieldChange]:
    """Field changes from a list of {field, old, new} objects (after any `each`).

    Absent or null `old`/`new` means "not recorded"; "" means "was/became empty"."""
    if not isinstance(value, list):
        raise UnusableValue("changes must be a list")
    out = []
    for item in value:
        if not isinstance(item, dict) or item.get("field") is None:
            raise UnusableValue("each change needs a field")
        change = pb.FieldChange(field=clean(scalar_text(item["field"])))
        old = item.get("old")
        if old is not None:
            text, kind = typed_text(old)
            change.old_value, change.old_type = clean(text), kind
        new = item.get("new")
        if new is not None:
            text, kind = typed_text(new)
            change.new_value, change.new_type = clean(text), kind
        out.append(change)
    return out


def unsigned(value: Any, maximum: int) -> int:
    if isinstance(value, bool):
        raise UnusableValue("a boolean is not a count")
    if isinstance(value, str) and value.strip().isdecimal():
        value = int(value.strip())
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= maximum:
        raise UnusableValue("not an unsigned integer in range")
    return value


# In the order they are applied: (target, setter, flag raised for an unusable value).
SETTERS: tuple[tuple[str, Setter, str], ...] = (
    ("timestamp", _set_time, "invalid_timestamp"),
    ("action", _set_str("action"), "mapping_error"),
    ("outcome", _set_outcome, "mapping_error"),
    ("user.id", _set_str("user", "id"), "mapping_error"),
    ("user.name", _set_str("user", "name"), "mapping_error"),
    ("user.email", _set_str("user", "email"), "mapping_error"),
    ("user.roles", _set_roles("user"), "mapping_error"),
    ("user.effective.id", _set_str("effective_user", "id"), "mapping_error"),
    ("user.effective.name", _set_str("effective_user", "name"), "mapping_error"),
    ("user.effective.email", _set_str("effective_user", "email"), "mapping_error"),
    ("user.target.id", _set_str("target_user", "id"), "mapping_error"),
    ("user.target.name", _set_str("target_user", "name"), "mapping_error"),
    ("user.target.email", _set_str("target_user", "email"), "mapping_error"),
    ("user.target.roles", _set_roles("target_user"), "mapping_error"),
    ("organization.id", _set_str("organization", "id"), "mapping_error"),
    ("organization.name", _set_str("organization", "name"), "mapping_error"),
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
TARGETS = frozenset(name for name, _setter, _flag in SETTERS)
# Targets whose values form a closed set: a `values` table without an entry for a value
# falls back to `default` (else the raw value is kept and usually fails the setter).
ENUMERATED = frozenset({"outcome"})
# Only the change list has items a per-item `each` mapping can address.
LIST_TARGETS = frozenset({"changes"})
