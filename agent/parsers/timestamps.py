"""Timestamp forms found in audit logs → Unix nanoseconds. Pure functions.

Accepted: ISO 8601 / RFC 3339 date-times with `Z` or a numeric offset (fractions up to
nanoseconds kept exactly), and epoch numbers (int, float, Decimal or digit strings)
whose magnitude tells the unit: seconds, milliseconds, microseconds or nanoseconds.
A date-time without a zone is rejected: guessing the host's zone would silently
shift audit times by hours.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation

_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"\s*(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)
_EPOCH_TEXT = re.compile(r"-?\d+(\.\d+)?")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INT64_MAX = 2**63 - 1
# Epoch magnitude thresholds: 1e11 s is the year 5138, so anything larger is a finer unit.
_UNITS = ((Decimal(10**17), 1), (Decimal(10**14), 1_000), (Decimal(10**11), 1_000_000))


class TimestampError(ValueError):
    """The value is not a timestamp form we accept; the message says why."""


def parse_iso8601(text: str) -> int:
    """Parse an ISO 8601 date-time with zone into Unix nanoseconds."""
    stripped = text.strip()
    match = _ISO.fullmatch(stripped)
    if match is None:
        raise TimestampError(f"not an ISO 8601 date-time: {text[:64]!r}")
    if match.group(8, 9) == (None, None):
        raise TimestampError(f"date-time has no zone (Z or ±hh:mm): {text[:64]!r}")
    return _iso_nanos(match, stripped)


def _iso_nanos(match: re.Match[str], text: str) -> int:
    """Nanoseconds of a matched date-time with zone."""
    # A log's timestamps share their second (and zone) with their neighbours: the
    # calendar arithmetic runs once per distinct second, the fraction is added to it.
    fraction = match.group(7)
    key = text[: match.start(7) - 1] + text[match.end(7) :] if fraction else text
    seconds = _SECONDS.get(key)
    if seconds is None:
        seconds = _epoch_seconds(match, text)
        if len(_SECONDS) >= _SECONDS_MAX:
            _SECONDS.clear()
        _SECONDS[key] = seconds
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    return _check_range(seconds * 1_000_000_000 + nanos)


_SECONDS: dict[str, int] = {}
_SECONDS_MAX = 4096


def _epoch_seconds(match: re.Match[str], text: str) -> int:
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    sign, off_h, off_m = match.group(9, 10, 11)
    try:
        offset = dt.timedelta(0)
        if sign is not None:
            offset = dt.timedelta(hours=int(off_h), minutes=int(off_m))
            if sign == "-":
                offset = -offset
        # Leap second 60 is folded into the next second rather than rejected.
        leap = 1 if second == 60 else 0
        moment = dt.datetime(
            year, month, day, hour, minute, second - leap, tzinfo=dt.timezone(offset)
        )
    except ValueError as exc:
        raise TimestampError(f"invalid date-time {text[:64]!r}: {exc}") from None
    delta = moment - _EPOCH
    return delta.days * 86_400 + delta.seconds + leap


def parse_epoch(value: int | float | Decimal | str) -> int:
    """Parse an epoch number (s, ms, µs or ns, told apart by magnitude) into nanoseconds."""
    if isinstance(value, bool):
        raise TimestampError("a boolean is not a timestamp")
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise TimestampError(f"not a number: {str(value)[:64]!r}") from None
    if not number.is_finite():
        raise TimestampError(f"not a finite number: {value!r}")
    nanos_per_unit = 1_000_000_000
    for threshold, per_unit in _UNITS:
        if abs(number) >= threshold:
            nanos_per_unit = per_unit
            break
    return _check_range(int(number * nanos_per_unit))


def parse_timestamp(value: object) -> int:
    """Accept either form: numbers and digit strings as epoch, other strings as ISO 8601."""
    if value.__class__ is str:
        # The common case first: an ISO 8601 date-time with its zone, nothing around it.
        match = _ISO.fullmatch(value)
        if match is not None and match.group(8, 9) != (None, None):
            return _iso_nanos(match, value)
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return parse_epoch(value)
    if isinstance(value, str):
        stripped = value.strip()
        if _EPOCH_TEXT.fullmatch(stripped):
            return parse_epoch(stripped)
        return parse_iso8601(stripped)
    raise TimestampError(f"expected a string or number, got {type(value).__name__}")


def _check_range(nanos: int) -> int:
    if not -_INT64_MAX <= nanos <= _INT64_MAX:
        raise TimestampError("timestamp outside the representable range (years 1678-2262)")
    return nanos
