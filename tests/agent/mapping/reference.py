"""The jsonlines parse and mapping path as it was before it was compiled (kept verbatim
as a test oracle): json.loads with Decimal floats, per-field dotted lookups, generic
setters, uncached timestamps and IP checks, `_flatten` over the whole record. The
compiled path must give events equal to these in every field."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from agent.parsers._common import clean
from agent.parsers.categorize import categorize, normalize_action
from agent.parsers.mapping import Plan
from agent.parsers.mapping.paths import lookup
from agent.parsers.mapping.rules import ABSENT, evaluate
from agent.parsers.mapping.targets import changes, unsigned
from agent.parsers.mapping.values import UnusableValue, json_text, json_type, scalar_text
from proto.v1 import audit_pb2 as pb

# --- timestamps -------------------------------------------------------------------------

_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"\s*(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT64_MAX = 2**63 - 1
_UNITS = ((Decimal(10**17), 1), (Decimal(10**14), 1_000), (Decimal(10**11), 1_000_000))


class _Bad(ValueError):
    pass


def parse_iso8601(text: str) -> int:
    match = _ISO.fullmatch(text.strip())
    if match is None:
        raise _Bad
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zulu, sign, off_h, off_m = match.groups()[6:]
    if zulu is None and sign is None:
        raise _Bad
    try:
        offset = dt.timedelta(0)
        if sign is not None:
            offset = dt.timedelta(hours=int(off_h), minutes=int(off_m))
            if sign == "-":
                offset = -offset
        leap = 1 if second == 60 else 0
        moment = dt.datetime(
            year, month, day, hour, minute, second - leap, tzinfo=dt.timezone(offset)
        )
    except ValueError:
        raise _Bad from None
    delta = moment - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds + leap
    nanos = int((fraction or "0").ljust(9, "0"))
    return _check_range(seconds * 1_000_000_000 + nanos)


def parse_epoch(value: int | float | Decimal | str) -> int:
    if isinstance(value, bool):
        raise _Bad
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise _Bad from None
    if not number.is_finite():
        raise _Bad
    nanos_per_unit = 1_000_000_000
    for threshold, per_unit in _UNITS:
        if abs(number) >= threshold:
            nanos_per_unit = per_unit
            break
    return _check_range(int(number * nanos_per_unit))


def parse_timestamp(value: object) -> int:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return parse_epoch(value)
    if isinstance(value, str):
        stripped = value.strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", stripped):
            return parse_epoch(stripped)
        return parse_iso8601(stripped)
    raise _Bad


def _check_range(nanos: int) -> int:
    if not -_INT64_MAX <= nanos <= _INT64_MAX:
        raise _Bad
    return nanos


# --- setters ----------------------------------------------------------------------------

_OUTCOMES = {
    "success": pb.OUTCOME_SUCCESS,
    "succeeded": pb.OUTCOME_SUCCESS,
    "failure": pb.OUTCOME_FAILURE,
    "failed": pb.OUTCOME_FAILURE,
}
_STR = {
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
_ROLES = {"user.roles": "user", "user.target.roles": "target_user"}


def set_target(event: pb.AuditEvent, target: str, value: Any) -> None:
    if target in _STR:
        *parents, name = _STR[target]
        holder: Any = event
        for parent in parents:
            holder = getattr(holder, parent)
        setattr(holder, name, clean(scalar_text(value)))
    elif target in _ROLES:
        items = value if isinstance(value, list) else [value]
        roles = [clean(scalar_text(item)) for item in items if item is not None]
        getattr(event, _ROLES[target]).roles.extend(roles)
    elif target == "timestamp":
        event.time_unix_nano = parse_timestamp(value)
    elif target == "outcome":
        outcome = _OUTCOMES.get(scalar_text(value).strip().lower())
        if outcome is None:
            raise UnusableValue("unknown outcome")
        event.outcome = outcome
    elif target == "source.ip":
        text = scalar_text(value).strip()
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise UnusableValue("not an IP address") from None
        event.source.ip = text
    elif target == "source.port":
        event.source.port = unsigned(value, 65_535)
    elif target == "record_count":
        event.record_count = unsigned(value, 2**64 - 1)
    elif target == "changes":
        event.changes.extend(changes(value))
    else:
        raise AssertionError(target)


# --- mapping ----------------------------------------------------------------------------


def apply_mapping(event: pb.AuditEvent, record: dict[str, Any], plan: Plan) -> None:
    consumed: set[str] = set()
    flags: list[str] = []
    for spec in plan.fields:
        rules = spec.rules
        if rules is None:
            path = spec.path
            if path in record:
                value = record[path]
            elif not spec.nested:
                continue
            else:
                found, value = lookup(record, path)
                if not found:
                    continue
            if value is None:
                consumed.add(path)
                continue
            roots: tuple[str, ...] = (path,)
        else:
            try:
                value, roots = evaluate(rules, record)
            except UnusableValue:
                if spec.flag not in flags:
                    flags.append(spec.flag)
                continue
            if value is ABSENT:
                consumed.update(roots)
                continue
        try:
            set_target(event, spec.target, value)
        except (UnusableValue, _Bad):
            if spec.flag not in flags:
                flags.append(spec.flag)
            continue
        consumed.update(roots)

    if event.action:
        found = plan.vocabulary.table.get(normalize_action(event.action))
        action, category = (
            (found.action, found.category)
            if found is not None
            else (event.action, categorize(event.action))
        )
        if category is None:
            flags.append("unknown_action")
        else:
            event.action = clean(action)
            event.event_category.extend(category.event_category)
            event.event_type.extend(category.event_type)
            event.audit_category = category.audit_category
            if event.outcome == pb.OUTCOME_UNSPECIFIED:
                event.outcome = category.implied_outcome

    for key, value in _flatten(record, ""):
        if value is not None and not _is_consumed(key, consumed):
            event.attributes[clean(key)] = clean(json_text(value))
    event.flags.extend(flags)


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


# --- jsonlines --------------------------------------------------------------------------


def parse(line: bytes, plan: Plan) -> pb.AuditEvent | None:
    if not line.strip():
        return None
    event = pb.AuditEvent()
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text = line.decode("utf-8", "replace")
        event.flags.append("invalid_utf8")
    event.original = clean(text)
    try:
        record = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return _parse_error(event, f"invalid JSON: {exc.msg} at column {exc.colno}")
    except (ValueError, RecursionError) as exc:
        return _parse_error(event, f"invalid JSON: {' '.join(str(exc).split())}")
    if not isinstance(record, dict):
        return _parse_error(event, f"expected a JSON object, got {json_type(record)}")
    apply_mapping(event, record, plan)
    return event


def _parse_error(event: pb.AuditEvent, reason: str) -> pb.AuditEvent:
    event.flags.append("parse_error")
    event.parse_error = clean(reason)
    return event


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
