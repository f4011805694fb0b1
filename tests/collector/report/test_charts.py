"""Charts: inline SVG, deterministic, ids unique across charts in one document."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from collector.report import charts

DAYS = [datetime(2026, 10, 1, tzinfo=UTC) + timedelta(days=i) for i in range(14)]


def test_same_data_same_bytes_and_no_metadata() -> None:
    one = charts.stacked_days("c-a", "Events", DAYS, {"x": list(range(14))}, ylabel="events")
    two = charts.stacked_days("c-a", "Events", DAYS, {"x": list(range(14))}, ylabel="events")
    assert one == two
    assert one.startswith('<svg class="chart"')
    assert "<metadata" not in one and "<?xml" not in one and "<!DOCTYPE" not in one


def test_ids_do_not_collide_between_charts() -> None:
    a = charts.day_line("c-a", "A", DAYS, [1] * 14, ylabel="n")
    b = charts.day_line("c-b", "A", DAYS, [1] * 14, ylabel="n")
    ids_a = set(re.findall(r'id="([^"]+)"', a))
    ids_b = set(re.findall(r'id="([^"]+)"', b))
    assert ids_a and not ids_a & ids_b
    for ref in re.findall(r"url\(#([^)]+)\)|href=\"#([^\"]+)\"", a):
        assert (ref[0] or ref[1]) in ids_a


def test_empty_data_says_so() -> None:
    assert "none in the period" in charts.hbars("c-e", "Top", [], [], xlabel="records")
