"""Small helpers every parser module shares. Pure.

Every parser builds its event the same way: decode the record (flagging invalid
UTF-8), keep it verbatim in `original`, and on a record it cannot read return the event
flagged "parse_error" with a one-line reason instead of raising. `guarded` is the last
line of defence for that promise: a bug in a parser becomes a flagged event, not a
crash of the reading thread.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import re
import zoneinfo
from collections.abc import Callable

from agent.parsers.categorize import categorize
from proto.v1 import audit_pb2 as pb

ParseFn = Callable[[bytes], pb.AuditEvent | None]

INTERNAL_ERROR = "internal parser error"
_UTC_NAMES = frozenset({"UTC", "GMT", "Z", "UCT", "ZULU", "UT"})
_NUMERIC_ZONE = re.compile(r"([+-])(\d{2}):?(\d{2})?")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def decode(data: bytes, event: pb.AuditEvent) -> str:
    """UTF-8 text of `data`; undecodable bytes become U+FFFD and flag the event."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if "invalid_utf8" not in event.flags:
            event.flags.append("invalid_utf8")
        return data.decode("utf-8", "replace")


def clean(text: str) -> str:
    """Protobuf strings must be valid UTF-8: no lone surrogates (JSON escapes can smuggle
    them in)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def one_line(text: str, limit: int = 300) -> str:
    """Whitespace runs folded to one space, cut to `limit` characters."""
    folded = " ".join(text.split())
    return folded if len(folded) <= limit else folded[: limit - 1] + "…"


def start_event(data: bytes, original: bytes | None = None) -> tuple[pb.AuditEvent, str]:
    """A new event whose `original` is `original` (default: `data`), and `data` decoded."""
    event = pb.AuditEvent()
    text = decode(data, event)
    event.original = clean(text if original is None else decode(original, event))
    return event, text


def parse_error(event: pb.AuditEvent, reason: str) -> pb.AuditEvent:
    """Flag `event` as not understood; the original stays, the event is shipped."""
    if "parse_error" not in event.flags:
        event.flags.append("parse_error")
    event.parse_error = clean(one_line(reason))
    return event


def flag(event: pb.AuditEvent, name: str) -> None:
    if name not in event.flags:
        event.flags.append(name)


def set_action(
    event: pb.AuditEvent,
    action: str,
    outcome: pb.Outcome.ValueType = pb.OUTCOME_UNSPECIFIED,
) -> None:
    """Set action, its ECS/audit categories and the outcome (or the one the action implies)."""
    event.action = action
    del event.event_category[:]
    del event.event_type[:]
    category = categorize(action) if action else None
    if category is not None:
        event.event_category.extend(category.event_category)
        event.event_type.extend(category.event_type)
        event.audit_category = category.audit_category
        if outcome == pb.OUTCOME_UNSPECIFIED:
            outcome = category.implied_outcome
    event.outcome = outcome


@functools.lru_cache(maxsize=4096)
def is_ip(text: str) -> bool:
    """Whether `text` is an IPv4 or IPv6 address. Cached: a log's client addresses repeat,
    and ipaddress's parser costs more than the rest of a field's mapping."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def set_ip(event: pb.AuditEvent, host: str) -> bool:
    """Put `host` in source.ip when it is an IP address (zone index and brackets dropped)."""
    text = host.strip().strip("[]").split("%", 1)[0]
    if not is_ip(text):
        return False
    event.source.ip = text
    return True


def set_port(event: pb.AuditEvent, port: str | int) -> None:
    text = str(port).strip()
    if text.isdecimal() and 0 < int(text) < 65_536:
        event.source.port = int(text)


def set_count(event: pb.AuditEvent, value: str | int) -> None:
    text = str(value).strip()
    if text.isdecimal() and len(text) < 20:
        event.record_count = int(text)


def put(event: pb.AuditEvent, key: str, value: object) -> None:
    """Keep a source field with no place in the schema (empty values are skipped)."""
    if value is None or value == "":
        return
    event.attributes[clean(key)] = clean(str(value))


def guarded(parse: ParseFn, name: str) -> ParseFn:
    """`parse` that never raises: an unexpected exception becomes a parse_error event."""

    def safe(data: bytes) -> pb.AuditEvent | None:
        try:
            return parse(data)
        except Exception as exc:  # noqa: BLE001 - a parser bug must not stop the agent
            event, _ = start_event(data)
            return parse_error(event, f"{INTERNAL_ERROR} in {name}: {type(exc).__name__}")

    return safe


def zone(name: str) -> dt.tzinfo:
    """An IANA zone name or UTC / a numeric offset; ValueError when unknown."""
    upper = name.strip().upper()
    if upper in _UTC_NAMES:
        return dt.UTC
    match = _NUMERIC_ZONE.fullmatch(name.strip())
    if match is not None:
        return _offset_zone(match)
    try:
        return zoneinfo.ZoneInfo(name.strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)"
        ) from None


def _offset_zone(match: re.Match[str]) -> dt.tzinfo:
    sign, hours, minutes = match.groups()
    delta = dt.timedelta(hours=int(hours), minutes=int(minutes or 0))
    if delta >= dt.timedelta(hours=24):
        raise ValueError("offset out of range")
    return dt.timezone(-delta if sign == "-" else delta)


def local_to_nanos(
    moment: dt.datetime, tz: dt.tzinfo, nanos: int = 0, abbreviation: str | None = None
) -> int:
    """Unix nanoseconds of a wall-clock time in `tz`.

    In a DST fold the zone abbreviation the source printed (CET/CEST) picks the side.
    """
    local = moment.replace(tzinfo=tz)
    if abbreviation is not None and local.tzname() != abbreviation:
        other = local.replace(fold=1 - local.fold)
        if other.tzname() == abbreviation:
            local = other
    delta = local - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + nanos


def zone_for_abbreviation(abbreviation: str, fallback: dt.tzinfo | None) -> dt.tzinfo | None:
    """The zone a printed abbreviation means: UTC names and numeric offsets are exact;
    anything else (CET, EST, …) is ambiguous worldwide and needs the configured zone."""
    upper = abbreviation.strip().upper()
    if upper in _UTC_NAMES:
        return dt.UTC
    match = _NUMERIC_ZONE.fullmatch(abbreviation.strip())
    if match is not None:
        try:
            return _offset_zone(match)
        except ValueError:
            return None
    return fallback
