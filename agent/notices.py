"""Events the agent writes about itself: what it could not read or could not keep.

Loss is never silent: it becomes an AuditEvent shipped like any other, flagged so that
analysts and the detection rules see it (audit.category security).
"""

from __future__ import annotations

from agent.spool import Loss
from agent.tail import Truncated, Unread
from proto.continuation import STREAM_CONTINUED
from proto.v1 import audit_pb2 as pb


def log_truncated(item: Truncated, source_format: str, now_ns: int) -> pb.AuditEvent:
    """`agent.log_truncated`: a file was truncated in place under the reader."""
    if item.while_stopped:
        return _truncated_while_stopped(item, source_format, now_ns)
    if item.copy_path:
        return _truncated_with_copy(item, source_format, now_ns)
    unread = max(0, item.last_seen_size - item.offset)
    return _file_notice(
        item,
        source_format,
        now_ns,
        action="agent.log_truncated",
        event_type="change",
        message=(
            f"{item.path} was truncated at read offset {item.offset} (size now {item.size}); "
            f"bytes of its previous content from offset {item.offset} on may be missed "
            f"(at least {unread} seen but unread, plus whatever was written before the "
            "truncation); reading resumes at offset 0"
        ),
        flags=["log_truncated"],
        attributes={
            "truncation.read_offset": str(item.offset),
            "truncation.last_seen_size": str(item.last_seen_size),
            "truncation.new_size": str(item.size),
            "truncation.bytes_possibly_missed": f">={unread}",
        },
    )


def _truncated_with_copy(item: Truncated, source_format: str, now_ns: int) -> pb.AuditEvent:
    return _file_notice(
        item,
        source_format,
        now_ns,
        action="agent.log_truncated",
        event_type="change",
        message=(
            f"{item.path} was truncated at read offset {item.offset} (size now {item.size}); "
            f"its unread bytes {item.offset}-{item.copy_size} are read from the copy "
            f"{item.copy_path}; only lines written between the copy and the truncation "
            "(copytruncate's own window) can be missing; reading resumes at offset 0"
        ),
        flags=["log_truncated"],
        attributes={
            "truncation.read_offset": str(item.offset),
            "truncation.new_size": str(item.size),
            "truncation.copy": item.copy_path,
            "truncation.copy_bytes": f"{item.offset}-{item.copy_size}",
            "truncation.bytes_missed": "0",
        },
    )


def _truncated_while_stopped(item: Truncated, source_format: str, now_ns: int) -> pb.AuditEvent:
    return _file_notice(
        item,
        source_format,
        now_ns,
        action="agent.log_truncated",
        event_type="change",
        message=(
            f"{item.path} was truncated or replaced while the agent was stopped (read up to "
            f"offset {item.offset}, size now {item.size}) and no copy of its previous "
            f"content was found: its bytes from offset {item.offset} to its previous end "
            "were not read; reading resumes at offset 0"
        ),
        flags=["log_truncated", "gap_at_source"],
        attributes={
            "truncation.read_offset": str(item.offset),
            "truncation.new_size": str(item.size),
            "truncation.while_stopped": "true",
            "unread.from_offset": str(item.offset),
            "unread.bytes": f"{item.offset}-end",
        },
    )


def log_unread(item: Unread, source_format: str, now_ns: int) -> pb.AuditEvent:
    """`agent.log_unread`: a file rotated away while the agent was stopped could not be
    read on (deleted, or compressed); names the byte range not read."""
    end = "end" if item.end is None else str(item.end)
    attributes = {"unread.from_offset": str(item.offset), "unread.bytes": f"{item.offset}-{end}"}
    if item.end is not None:
        attributes["unread.size"] = str(item.end - item.offset)
    return _file_notice(
        item,
        source_format,
        now_ns,
        action="agent.log_unread",
        event_type="deletion",
        message=f"{item.path} ({item.file_key}) {item.reason}",
        flags=["gap_at_source"],
        attributes=attributes,
    )


def _file_notice(
    item: Truncated | Unread,
    source_format: str,
    now_ns: int,
    *,
    action: str,
    event_type: str,
    message: str,
    flags: list[str],
    attributes: dict[str, str],
) -> pb.AuditEvent:
    """A security event about the file `item` names, placed at its read offset."""
    event = pb.AuditEvent(
        time_unix_nano=now_ns,
        event_category=["file"],
        event_type=[event_type],
        action=action,
        audit_category=pb.AUDIT_CATEGORY_SECURITY,
        message=message,
        flags=flags,
        attributes=attributes,
    )
    event.log.file_path = item.path
    event.log.offset = item.offset
    event.log.source_name = item.source
    event.log.format = source_format
    return event


def spool_loss(loss: Loss, now_ns: int) -> pb.AuditEvent:
    """`agent.spool_loss`: spooled events that could not be read back (corruption)."""
    return pb.AuditEvent(
        time_unix_nano=now_ns,
        event_category=["file"],
        event_type=["deletion"],
        action="agent.spool_loss",
        audit_category=pb.AUDIT_CATEGORY_SECURITY,
        message=(
            f"spool corruption: events with sequences {loss.first}-{loss.last} were lost "
            f"(bytes {loss.start}-{loss.end} of spool segment {loss.segment})"
        ),
        flags=["gap_at_source"],
        attributes={
            "loss.first_sequence": str(loss.first),
            "loss.last_sequence": str(loss.last),
            "loss.segment": loss.segment,
            "loss.bytes": f"{loss.start}-{loss.end}",
        },
    )


def stream_continued(
    previous_sequence: int, previous_head: bytes | None, now_ns: int
) -> pb.AuditEvent:
    """`agent.stream_continued` (proto.continuation): the first event of a stream that
    took over a stream format 1 state. It tells an upgrade with intact state (file
    positions kept, nothing re-read or lost) from a restart without state; signed like
    every event, so the collector and `crm-audit verify` can check the claim against
    the format 1 history. `previous_head` is given only when the legacy chain state
    held the head at exactly `previous_sequence` (the last acked one)."""
    attributes = {"previous_format": "1", "previous_sequence": str(previous_sequence)}
    head = ""
    if previous_head is not None:
        attributes["previous_head"] = previous_head.hex()
        head = f" (head {previous_head.hex()[:16]})"
    return pb.AuditEvent(
        time_unix_nano=now_ns,
        event_category=["configuration"],
        event_type=["change"],
        action=STREAM_CONTINUED,
        audit_category=pb.AUDIT_CATEGORY_SECURITY,
        message=(
            f"agent upgraded from stream format 1 with its state: this stream continues the "
            f"format 1 history that ended at sequence {previous_sequence}{head}; file "
            "positions were kept"
        ),
        attributes=attributes,
    )
