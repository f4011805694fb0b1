"""Period, duration and ISM-policy parsing of the report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.report.build import parse_duration, parse_period
from collector.report.errors import ReportInputError
from collector.report.retention import policy_retention, read_policy_files

REPO = Path(__file__).resolve().parents[3]


def test_a_plain_to_date_includes_that_day() -> None:
    period = parse_period("2026-10-01", "2026-12-31")
    assert period.start == datetime(2026, 10, 1, tzinfo=UTC)
    assert period.end == datetime(2027, 1, 1, tzinfo=UTC)
    assert len(period.days) == 92


def test_times_and_bad_periods() -> None:
    period = parse_period("2026-10-01T06:00:00Z", "2026-10-01T18:00:00+02:00")
    assert period.end - period.start == timedelta(hours=10)
    with pytest.raises(ReportInputError):
        parse_period("2026-10-02", "2026-10-01")
    with pytest.raises(ValueError):
        parse_period("last quarter", "2026-10-01")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1.5h", 5400)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0", "-5m", "15 minutes", "1w"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_retention_of_the_shipped_policy_is_seven_years() -> None:
    files = read_policy_files(REPO / "config" / "opensearch")
    assert set(files) == {"standard"}
    assert policy_retention(files["standard"][1]) == (True, 2555.0)


def test_policy_without_delete_never_deletes() -> None:
    body = json.loads('{"policy": {"states": [{"name": "hot", "actions": [], "transitions": []}]}}')
    assert policy_retention(body) == (False, None)
