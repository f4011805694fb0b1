"""JSON-lines parser: one JSON object per line → one AuditEvent. Pure.

The default mapping matches what the CRM application writes (`event`, `user.id`,
`source_ip`, …). A source's `mapping` overrides single entries: keys are schema fields
(`FIELDS`), values rules of the mapping language (agent.parsers.mapping, docs/mapping.md):
a dotted path (`actor.username`), a JMESPath expression, or a rule with a translation
table, default, constant, condition or per-item `each`. The source's `actions` table
maps its action names to canonical ones. Whatever the mapping does not consume is kept
in `attributes` under its dotted path, so nothing is dropped.

Nothing here raises on bad input: a line that is not a JSON object still becomes an
event, flagged "parse_error" with the raw line in `original`. A mapped value of the
wrong shape (an IP that is not an IP, roles that are not a list, …) is flagged
"mapping_error" and stays in `attributes`; an unusable timestamp is flagged
"invalid_timestamp"; an action known neither to the source's `actions` nor to the
built-in vocabulary is flagged "unknown_action". Invalid UTF-8 is decoded with U+FFFD
and flagged "invalid_utf8".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import partial
from typing import Any

import msgspec

from agent import native
from agent.parsers._common import parse_error, start_event
from agent.parsers.mapping import TARGETS, Plan, compile_plan
from agent.parsers.mapping.compile import counting_failed_targets
from agent.parsers.mapping.values import json_type
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
# Every target of the mapping language; the new ones (user.effective.*, user.target.*,
# organization.*) have no default path: the built-in application log has none.
FIELDS = TARGETS


def make_parser(
    overrides: Mapping[str, Any], actions: Mapping[str, Any] | None = None
) -> Callable[[bytes], pb.AuditEvent | None]:
    """A parse function using the default mapping with `overrides` applied: the compiled
    kernel's event where it takes the mapping (agent.native), else Python's. A parser
    made inside `count_failed_targets` (`crm-audit-agent parse`) is Python's, which
    counts each target's unusable values.

    Raises agent.parsers.mapping.MappingError (a ValueError) for an invalid mapping."""
    plan = compile_plan(DEFAULT_MAPPING, overrides, actions, FIELDS)
    mapper = None if counting_failed_targets() else native.jsonlines_mapper(plan)
    if mapper is None:
        return partial(parse, plan=plan)

    from_bytes = pb.AuditEvent.FromString

    def map_line(line: bytes) -> pb.AuditEvent | None:
        if not line or line.isspace():
            return None
        data = mapper(line)
        # None: the kernel declined this line (agent.native); Python parses it.
        return parse(line, plan) if data is None else from_bytes(data)

    return map_line


def make_source(
    overrides: Mapping[str, Any], actions: Mapping[str, Any] | None = None
) -> tuple[
    Callable[[bytes], pb.AuditEvent | None],
    Callable[[bytes, bytes, int, int], tuple[bytes, int] | None] | None,
]:
    """For the agent's pipeline, one plan: the compiled kernel's encoder
    (agent.parsers.Encoder; None when the kernel is not installed or does not take the
    mapping) and Python's parse function for what the encoder leaves, which the kernel
    would decline again (declined lines, records the framer cut, blank lines)."""
    plan = compile_plan(DEFAULT_MAPPING, overrides, actions, FIELDS)
    mapper = native.jsonlines_mapper(plan)
    return partial(parse, plan=plan), None if mapper is None else mapper.stamped


def parse(line: bytes, plan: Plan | None = None) -> pb.AuditEvent | None:
    """One line (without its newline) → one event; None for a blank line."""
    if not line or line.isspace():
        return None
    event, text = start_event(line)
    record = _decode(line if not event.flags else text, text, event)
    if record is None:
        return event
    (_DEFAULT_PLAN if plan is None else plan).apply(event, record)
    return event


_DEFAULT_PLAN = compile_plan(DEFAULT_MAPPING, {})
# msgspec reads JSON several times faster than the standard library; floats become
# Decimal (their exact digits kept, as json.loads(parse_float=Decimal) does).
_FAST = msgspec.json.Decoder(float_hook=Decimal)


def _decode(data: bytes | str, text: str, event: pb.AuditEvent) -> dict[str, Any] | None:
    """The record a line holds, or None with `event` flagged parse_error.

    Whatever msgspec refuses (invalid JSON, but also lone surrogates json.loads accepts)
    goes through json.loads, so what is accepted and each error message are the
    standard library's."""
    try:
        record = _FAST.decode(data)
    except (msgspec.DecodeError, RecursionError):
        try:
            record = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            parse_error(event, f"invalid JSON: {exc.msg} at column {exc.colno}")
            return None
        except (ValueError, RecursionError) as exc:
            parse_error(event, f"invalid JSON: {exc}")
            return None
    if not isinstance(record, dict):
        parse_error(event, f"expected a JSON object, got {json_type(record)}")
        return None
    return record


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
