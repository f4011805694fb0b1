from __future__ import annotations

import re

from agent.parsers import get_framer
from agent.parsers.framing import (
    HeaderCsvFramer,
    JsonArrayFramer,
    LineFramer,
    QuoteBalancedFramer,
    Record,
    StartPatternFramer,
)


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


def _feed_lines(framer: object, lines: list[bytes]) -> list[Record]:
    out: list[Record] = []
    offset = 0
    for line in lines:
        end = offset + len(line) + 1
        out.extend(framer.feed(line, offset, end))  # type: ignore[attr-defined]
        offset = end
    return out


def test_quote_balanced_framer_joins_quoted_newlines() -> None:
    framer = QuoteBalancedFramer()
    records = _feed_lines(framer, [b'a,"x', b'y ""q""', b'z",b', b"c,d"])
    assert [r.data for r in records] == [b'a,"x\ny ""q""\nz",b', b"c,d"]
    assert records[0].line_count == 3 and records[1].offset == records[0].end_offset
    assert framer.held_offset() is None
    assert _feed_lines(framer, [b'open "quote']) == []
    assert framer.held_offset() == 0
    assert [r.data for r in framer.flush()] == [b'open "quote']


def test_json_array_framer_yields_objects_incrementally() -> None:
    framer = JsonArrayFramer()
    lines = [b"[", b'{ "a": "}{\\"",', b'  "b": {"c": 1} },', b'{"d": 2}, {"e": 3}', b"junk", b"{"]
    records = _feed_lines(framer, lines)
    assert [r.data for r in records] == [
        b'{ "a": "}{\\"",\n  "b": {"c": 1} }',
        b'{"d": 2}',
        b'{"e": 3}',
        b"junk",
    ]
    assert records[0].offset == 2 and records[0].line_count == 2
    assert framer.held_offset() == sum(len(line) + 1 for line in lines[:-1])
    assert [r.data for r in framer.flush()] == [b"{"]
    assert _feed_lines(JsonArrayFramer(), [b"]"]) == []


def test_header_csv_framer_prefixes_rows_with_the_header() -> None:
    framer = HeaderCsvFramer(lambda data: data.startswith(b'"H'))
    records = _feed_lines(framer, [b'"H1","H2"', b'"a","b', b'c"', b"", b'"H3"', b'"d"'])
    assert [r.data for r in records] == [b'"H1","H2"\n"a","b\nc"', b'"H3"\n"d"']
    assert records[0].offset == len(b'"H1","H2"') + 1
    resumed = HeaderCsvFramer(lambda data: data.startswith(b'"H'))
    assert [r.data for r in _feed_lines(resumed, [b'"x"'])] == [b'"x"']
    resumed.prime(b'"H1"')
    assert [r.data for r in _feed_lines(resumed, [b'"y"'])] == [b'"H1"\n"y"']
