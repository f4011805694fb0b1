"""Any line format described by a regular expression with named groups → AuditEvent. Pure.

Options:
    pattern: a Python regex with named groups, matched against the whole line
    timestamp_format: strptime format of the `timestamp` group (default: ISO 8601 or
                      epoch, as for jsonlines)
    timezone: IANA zone for timestamps that carry none (required then)

`mapping` maps schema fields to group names (regex group names cannot hold dots); by
default a group named like the field with `_` for `.` fills it (`user_name` →
`user.name`, `source_ip` → `source.ip`, `action`, `outcome`, `timestamp`, …). Groups
mapped to nothing are kept as attributes. A line the pattern does not match is shipped
flagged parse_error.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

from pydantic import field_validator, model_validator

from agent.parsers._common import ParseFn, flag, local_to_nanos, parse_error, start_event, zone
from agent.parsers.jsonlines import DEFAULT_MAPPING, apply_mapping, compile_mapping
from agent.parsers.options import FormatOptions
from proto.v1 import audit_pb2 as pb

NAME = "regex"
# `changes` needs structure a regex group cannot give.
FIELDS = frozenset(DEFAULT_MAPPING) - {"changes"}


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


def make_parser(overrides: Mapping[str, str], options: RegexOptions) -> ParseFn:
    unknown = set(overrides) - FIELDS
    if unknown:
        raise ValueError(f"unknown schema fields: {sorted(unknown)}")
    pattern = re.compile(options.pattern)
    mapping = {f: f.replace(".", "_") for f in FIELDS} | dict(overrides)
    mapping["changes"] = "\0no-group"  # never present
    plan = compile_mapping(mapping)
    tz = zone(options.timezone) if options.timezone else None
    time_group = mapping["timestamp"]

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
        stamp = record.get(time_group)
        if isinstance(stamp, str) and options.timestamp_format:
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
