"""The schema fields a mapping can fill, and how a mapped value fills each. Pure.

A setter takes the event and the (non-null) mapped value and either fills the event or
raises UnusableValue / TimestampError; the value then stays in `attributes` and the
event is flagged with the target's flag.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from agent.parsers._common import clean, is_ip
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


def _text(value: Any) -> str:
    return clean(value if type(value) is str else scalar_text(value))


def _set_str(*attrs: str) -> Setter:
    # One closure per depth: a setter runs for every mapped field of every event.
    if len(attrs) == 1:
        (name,) = attrs

        def set_top(event: pb.AuditEvent, value: Any) -> None:
            setattr(event, name, _text(value))

        return set_top
    parent, name = attrs

    def set_nested(event: pb.AuditEvent, value: Any) -> None:
        setattr(getattr(event, parent), name, _text(value))

    return set_nested


def _set_roles(attr: str) -> Setter:
    def setter(event: pb.AuditEvent, value: Any) -> None:
        items = value if isinstance(value, list) else [value]
        # Check every item first: a half-filled list would hide the unusable rest.
        roles = [_text(item) for item in items if item is not None]
        getattr(event, attr).roles.extend(roles)

    return setter


def _set_ip(event: pb.AuditEvent, value: Any) -> None:
    text = scalar_text(value).strip()
    if not is_ip(text):
        raise UnusableValue("not an IP address")
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


# Text targets and the event attribute each fills (parent message, field): the mapping
# compiler writes these assignments inline.
STRING_ATTRS: dict[str, tuple[str, ...]] = {
    "action": ("action",),
    "user.id": ("user", "id"),
    "user.name": ("user", "name"),
    "user.email": ("user", "email"),
    "user.effective.id": ("effective_user", "id"),
    "user.effective.name": ("effective_user", "name"),
    "user.effective.email": ("effective_user", "email"),
    "user.target.id": ("target_user", "id"),
    "user.target.name": ("target_user", "name"),
    "user.target.email": ("target_user", "email"),
    "organization.id": ("organization", "id"),
    "organization.name": ("organization", "name"),
    "source.device_id": ("source", "device_id"),
    "source.user_agent": ("source", "user_agent"),
    "session_id": ("session_id",),
    "object.type": ("object", "type"),
    "object.id": ("object", "id"),
    "object.name": ("object", "name"),
    "message": ("message",),
}


def _string(target: str) -> Setter:
    return _set_str(*STRING_ATTRS[target])


# In the order they are applied: (target, setter, flag raised for an unusable value).
SETTERS: tuple[tuple[str, Setter, str], ...] = (
    ("timestamp", _set_time, "invalid_timestamp"),
    ("action", _string("action"), "mapping_error"),
    ("outcome", _set_outcome, "mapping_error"),
    ("user.id", _string("user.id"), "mapping_error"),
    ("user.name", _string("user.name"), "mapping_error"),
    ("user.email", _string("user.email"), "mapping_error"),
    ("user.roles", _set_roles("user"), "mapping_error"),
    ("user.effective.id", _string("user.effective.id"), "mapping_error"),
    ("user.effective.name", _string("user.effective.name"), "mapping_error"),
    ("user.effective.email", _string("user.effective.email"), "mapping_error"),
    ("user.target.id", _string("user.target.id"), "mapping_error"),
    ("user.target.name", _string("user.target.name"), "mapping_error"),
    ("user.target.email", _string("user.target.email"), "mapping_error"),
    ("user.target.roles", _set_roles("target_user"), "mapping_error"),
    ("organization.id", _string("organization.id"), "mapping_error"),
    ("organization.name", _string("organization.name"), "mapping_error"),
    ("source.ip", _set_ip, "mapping_error"),
    ("source.port", _set_port, "mapping_error"),
    ("source.device_id", _string("source.device_id"), "mapping_error"),
    ("source.user_agent", _string("source.user_agent"), "mapping_error"),
    ("session_id", _string("session_id"), "mapping_error"),
    ("object.type", _string("object.type"), "mapping_error"),
    ("object.id", _string("object.id"), "mapping_error"),
    ("object.name", _string("object.name"), "mapping_error"),
    ("changes", _set_changes, "mapping_error"),
    ("record_count", _set_count, "mapping_error"),
    ("message", _string("message"), "mapping_error"),
)
TARGETS = frozenset(name for name, _setter, _flag in SETTERS)
# Targets whose values form a closed set: a `values` table without an entry for a value
# falls back to `default` (else the raw value is kept and usually fails the setter).
ENUMERATED = frozenset({"outcome"})
# Only the change list has items a per-item `each` mapping can address.
LIST_TARGETS = frozenset({"changes"})
