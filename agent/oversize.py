"""Cut an event that would not fit a batch (proto.limits.MAX_EVENT_BYTES).

A record under the line limit can still parse into a larger event: `original` holds
the record and the parsed fields may repeat most of it. Such an event would be
refused by the collector on every resend and block every event behind it, so when
the spool serializes it (its one serialization, before it is hashed, chained or
stored) it is cut, measured as parsed and stamped, without its sequence and stream:
its largest parsed fields are dropped first, then `original` is shortened, until it
fits. It is flagged `line_truncated` and keeps
the size of the record it came from, so nothing is silently lost: the analyst sees
that, and how much, was cut.
"""

from __future__ import annotations

from proto import limits
from proto.v1 import audit_pb2 as pb

# Room left for what is set after the cut: sequence, chain links, observer, log origin.
_MARGIN = 16 * 1024
LIMIT = limits.MAX_EVENT_BYTES - _MARGIN

# Never dropped: when, where from, and what the record was.
_KEEP = frozenset({"time_unix_nano", "observed_unix_nano", "observer", "log", "original", "flags"})
FLAG = "line_truncated"
ORIGINAL_BYTES = "line.original_bytes"


def mark_truncated(event: pb.AuditEvent, original_bytes: int) -> None:
    """Flag `event` as cut from a record of `original_bytes` bytes."""
    if FLAG not in event.flags:
        event.flags.append(FLAG)
    event.attributes[ORIGINAL_BYTES] = str(original_bytes)


def fit(event: pb.AuditEvent, record_bytes: int, limit: int = LIMIT) -> bool:
    """Cut `event` in place to at most `limit` serialized bytes; True if it was cut.
    `record_bytes` is the size of the record it was parsed from (kept in an attribute)."""
    if event.ByteSize() <= limit:
        return False
    fields = [f for f, _ in event.ListFields() if f.name not in _KEEP]
    sizes = {f.name: _field_size(event, f.name) for f in fields}
    for name in sorted(sizes, key=lambda n: sizes[n], reverse=True):
        if event.ByteSize() <= limit:
            break
        event.ClearField(name)  # type: ignore[arg-type]  # a name ListFields gave
    mark_truncated(event, record_bytes)
    excess = event.ByteSize() - limit
    if excess > 0:
        raw = event.original.encode()
        # errors="ignore": a multi-byte character cut in half is dropped, not mangled.
        event.original = raw[: max(0, len(raw) - excess)].decode("utf-8", errors="ignore")
    return True


def _field_size(event: pb.AuditEvent, name: str) -> int:
    probe = pb.AuditEvent()
    field = getattr(event, name)
    if isinstance(field, str | bytes | int | float | bool):
        setattr(probe, name, field)
    else:  # a message, repeated or map field
        getattr(probe, name).MergeFrom(field)
    return probe.ByteSize()
