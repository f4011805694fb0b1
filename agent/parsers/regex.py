"""Any line format described by a regular expression with named groups → AuditEvent. Pure.

Options:
    pattern: a Python regex with named groups, matched against the whole line
    timestamp_format: strptime format of the `timestamp` group (default: ISO 8601 or
                      epoch, as for jsonlines)
    timezone: IANA zone for timestamps that carry none (required then)

`mapping` maps schema fields to rules of the mapping language (docs/mapping.md) over
the captures: a group name (regex group names cannot hold dots), or a rule with a
translation table, default, constant or condition; `actions` maps the source's action
names to canonical ones. By default a group named like the field with `_` for `.`
fills it (`user_name` → `user.name`, `source_ip` → `source.ip`, `user_effective_name`
→ `user.effective.name`, `action`, `outcome`, `timestamp`, …). Groups mapped to
nothing are kept as attributes. A line the pattern does not match is shipped
flagged parse_error.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from pydantic import field_validator, model_validator

from agent.parsers._common import ParseFn, flag, local_to_nanos, parse_error, start_event, zone
from agent.parsers.mapping import TARGETS, apply_mapping, compile_plan
from agent.parsers.options import FormatOptions
from proto.v1 import audit_pb2 as pb

NAME = "regex"
# `changes` needs structure a regex group cannot give.
FIELDS = TARGETS - {"changes"}


class RegexOptions(FormatOptions):
    """The pattern and how to read its timestamp (see module docstring)."""

    pattern: str
    timestamp_format: str | None = None
    timezone: str | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        if not compiled.groupindex:
            raise ValueError("the pattern has no named groups (?P<name>...)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            zone(value)
        return value

    @model_validator(mode="after")
    def _zone_for_format(self) -> RegexOptions:
        fmt = self.timestamp_format
        if fmt is not None and "%z" not in fmt and "%Z" not in fmt and self.timezone is None:
            raise ValueError("timestamp_format has no zone (%z): set timezone")
        return self


def make_parser(
    overrides: Mapping[str, Any], options: RegexOptions, actions: Mapping[str, Any] | None = None
) -> ParseFn:
    """Raises agent.parsers.mapping.MappingError (a ValueError) for an invalid mapping."""
    pattern = re.compile(options.pattern)
    defaults = {f: f.replace(".", "_") for f in FIELDS}
    plan = compile_plan(defaults, overrides, actions, FIELDS)
    tz = zone(options.timezone) if options.timezone else None
    # strptime applies to the group the timestamp is read from (a plain group name).
    stamp_rule = {**defaults, **overrides}["timestamp"]
    if isinstance(stamp_rule, dict):
        stamp_rule = stamp_rule.get("path")
    time_group = stamp_rule if isinstance(stamp_rule, str) else None

    def parse(data: bytes) -> pb.AuditEvent | None:
        if not data.strip():
            return None
        event, text = start_event(data)
        match = pattern.fullmatch(text.rstrip("\r"))
        if match is None:
            return parse_error(event, "line does not match the configured pattern")
        record: dict[str, object] = {
            k: v for k, v in match.groupdict().items() if v is not None and v != ""
        }
        stamp = record.get(time_group) if time_group is not None else None
        if time_group is not None and isinstance(stamp, str) and options.timestamp_format:
            try:
                moment = dt.datetime.strptime(stamp, options.timestamp_format)
            except ValueError:
                flag(event, "invalid_timestamp")
            else:
                if moment.tzinfo is not None:
                    record[time_group] = moment.isoformat()
                elif tz is not None:
                    event.time_unix_nano = local_to_nanos(moment, tz, moment.microsecond * 1000)
                    record.pop(time_group)
                    event.attributes["timestamp"] = stamp
        apply_mapping(event, record, plan)
        return event

    return parse
