"""Protobuf wire-format pieces the agent writes around bytes it already holds (the
spool's sequence and stream-id fields, a batch's event fields), instead of building a
message to serialize. Pure."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """`value` (≥ 0) as a protobuf varint."""
    # Lengths and sequences: almost always one or two bytes, built without the loop.
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def sequence_field(sequence: int) -> bytes:
    """AuditEvent.sequence (field 1, varint) as serialized; nothing for 0."""
    return b"\x08" + varint(sequence) if sequence else b""


def stream_field(stream_id: str) -> bytes:
    """AuditEvent.stream_id (field 27, length-delimited) as serialized; nothing for ""."""
    data = stream_id.encode()
    return b"\xda\x01" + varint(len(data)) + data if data else b""
