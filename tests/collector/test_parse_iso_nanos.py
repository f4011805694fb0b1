"""`parse_iso_nanos` reads `iso_nanos` back by fixed positions with per-day and
per-second caches; it must accept and refuse exactly what the plain `strptime` parse
did, for any text."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.documents import iso_nanos, parse_iso_nanos


def reference(text: str) -> int:
    """The parse as it was: `strptime` of the whole second, the fraction to 9 digits."""
    if not text.endswith("Z"):
        raise ValueError(f"not a UTC timestamp: {text!r}")
    whole, _, fraction = text[:-1].partition(".")
    when = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    nanos = int((fraction + "000000000")[:9]) if fraction else 0
    return int(when.timestamp()) * 1_000_000_000 + nanos


def outcome(parse: object, text: str) -> object:
    try:
        return parse(text)  # type: ignore[operator]
    except ValueError:
        return ValueError


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**63 - 1))
def test_reads_back_what_iso_nanos_writes(unix_nano: int) -> None:
    assert parse_iso_nanos(iso_nanos(unix_nano)) == unix_nano


def mutated(text: str, data: st.DataObject) -> str:
    position = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(
        st.sampled_from(["", "0", "9", "6", "2", " ", "+", "٣", "x", "00", ":"])
    )
    return text[:position] + replacement + text[position + 1 :]


@settings(max_examples=1500, deadline=None)
@given(st.integers(0, 2**63 - 1), st.data())
def test_accepts_and_refuses_what_strptime_did(unix_nano: int, data: st.DataObject) -> None:
    text = mutated(iso_nanos(unix_nano), data)
    assert outcome(parse_iso_nanos, text) == outcome(reference, text), text


@settings(max_examples=1500, deadline=None)
@given(st.integers(0, 2**63 - 1), st.data())
def test_a_cached_second_accepts_and_refuses_the_same(unix_nano: int, data: st.DataObject) -> None:
    # The unmutated text first, so its whole second is cached when the mutated one is read.
    original = iso_nanos(unix_nano)
    assert parse_iso_nanos(original) == unix_nano
    text = mutated(original, data)
    assert outcome(parse_iso_nanos, text) == outcome(reference, text), text


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-29T00:00:00Z",  # no such day
        "2026-12-07T24:00:00Z",
        "2026-12-07T23:60:00Z",
        "2026-12-07T23:59:60Z",
        "2026-12-07T1:02:03Z",  # strptime takes one digit: so does the fallback
        "2026-12-07T01:02:03.5Z",
        "2026-12-07 01:02:03Z",
        "2026-12-07T01:02:03",
    ],
)
def test_edge_cases_match_strptime(text: str) -> None:
    assert outcome(parse_iso_nanos, text) == outcome(reference, text)
