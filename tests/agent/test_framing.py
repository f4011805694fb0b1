from __future__ import annotations

import re

from agent.parsers import get_framer
from agent.parsers.framing import LineFramer, Record, StartPatternFramer


def _feed_all(framer: StartPatternFramer, lines: list[bytes]) -> list[Record]:
    out: list[Record] = []
    offset = 0
    for line in lines:
        end = offset + len(line) + 1
        out.extend(framer.feed(line, offset, end))
        offset = end
    return out


def test_line_framer_is_identity() -> None:
    framer = LineFramer()
    assert framer.feed(b"a", 0, 2) == [Record(b"a", 0, 2)]
    assert framer.flush() == [] and framer.held_offset() is None


def test_registry_gives_line_framing_for_jsonlines() -> None:
    assert isinstance(get_framer("jsonlines"), LineFramer)


def test_continuation_lines_join_the_record_before_them() -> None:
    framer = StartPatternFramer(re.compile(rb"^\d{4}-"))
    lines = [b"2026-11-27 LOG: a", b"\tSELECT 1", b"\tFROM t", b"2026-11-27 LOG: b"]
    records = _feed_all(framer, lines)
    assert [r.data for r in records] == [b"2026-11-27 LOG: a\n\tSELECT 1\n\tFROM t"]
    assert records[0].offset == 0 and records[0].line_count == 3
    # The last record is held until the next start line or a flush.
    held = framer.held_offset()
    assert held == records[0].end_offset
    assert [r.data for r in framer.flush()] == [b"2026-11-27 LOG: b"]
    assert framer.held_offset() is None


def test_orphan_continuation_is_a_record_not_dropped() -> None:
    framer = StartPatternFramer(re.compile(rb"^\d{4}-"))
    records = _feed_all(framer, [b"\tleft over", b"2026-11-27 LOG: a"])
    assert [r.data for r in records] == [b"\tleft over"]
    assert [r.data for r in framer.flush()] == [b"2026-11-27 LOG: a"]


def test_max_lines_bounds_a_record() -> None:
    framer = StartPatternFramer(re.compile(rb"^S"), max_lines=2)
    records = _feed_all(framer, [b"S1", b"c", b"c", b"c"])
    assert [r.line_count for r in records] == [2, 1, 1]
