"""Sample CRM audit traffic: deterministic, valid JSON lines, the agreed field names,
and the suspicious patterns detection work needs."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from collector.admin import sample

START = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
TOP_LEVEL = {
    "timestamp",
    "event",
    "outcome",
    "user",
    "source_ip",
    "device",
    "user_agent",
    "session_id",
    "object",
    "changes",
    "record_count",
    "reason",
    "message",
}
EVENTS = {
    "login",
    "logout",
    "record.view",
    "record.update",
    "record.export",
    "role.assign",
    "settings.update",
}


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return list(sample.generate(2000, seed=42, start=START))


def test_same_seed_same_output() -> None:
    first = list(sample.generate(500, seed=3, start=START))
    second = list(sample.generate(500, seed=3, start=START))
    assert first == second
    assert first != list(sample.generate(500, seed=4, start=START))


def test_count_is_exact() -> None:
    for count in (0, 1, 7, 50, 333):
        assert len(list(sample.generate(count, seed=1, start=START))) == count


def test_fields_and_values(events: list[dict[str, Any]]) -> None:
    for record in events:
        assert set(record) <= TOP_LEVEL, record
        assert record["event"] in EVENTS
        assert record["outcome"] in ("success", "failure")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["timestamp"])
        user = record["user"]
        assert set(user) == {"id", "name", "email", "roles"}
        assert re.fullmatch(r"u-\d+", user["id"])
        assert set(user["roles"]) <= set(sample.ROLES)
        assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", record["source_ip"])
        if record["event"] == "login" and record["outcome"] == "failure":
            assert record["reason"] and "session_id" not in record
        else:
            assert record["session_id"].startswith("s-")
        if record["event"] in ("record.view", "record.update"):
            assert record["object"]["type"] == "customer"
            assert re.fullmatch(r"CUST-\d{6}", record["object"]["id"])
        if record["event"] == "record.update":
            assert record["changes"]
            for change in record["changes"]:
                assert set(change) == {"field", "old", "new"}
                assert change["field"] in sample.CHANGE_FIELDS
                assert change["old"] != change["new"]
        if record["event"] == "record.export":
            assert isinstance(record["record_count"], int) and record["record_count"] > 0
        else:
            assert "record_count" not in record


def test_timestamps_never_go_backwards(events: list[dict[str, Any]]) -> None:
    stamps = [record["timestamp"] for record in events]
    assert stamps == sorted(stamps)
    assert stamps[0] >= "2026-11-27T09:00:00.000Z"


def test_every_kind_of_event_occurs(events: list[dict[str, Any]]) -> None:
    kinds = Counter((record["event"], record["outcome"]) for record in events)
    for event in EVENTS:
        assert kinds[(event, "success")] > 0, event
    assert kinds[("login", "failure")] > 0


def test_changes_chain_per_customer_field(events: list[dict[str, Any]]) -> None:
    """`old` of a change is the `new` of the previous change of that field."""
    last: dict[tuple[str, str], str] = {}
    for record in events:
        if record["event"] != "record.update":
            continue
        for change in record["changes"]:
            key = (record["object"]["id"], change["field"])
            if key in last:
                assert change["old"] == last[key]
            last[key] = change["new"]


def test_suspicious_patterns_present(events: list[dict[str, Any]]) -> None:
    failures_by_user_ip = Counter(
        (record["user"]["id"], record["source_ip"])
        for record in events
        if record["event"] == "login" and record["outcome"] == "failure"
    )
    assert max(failures_by_user_ip.values()) >= 5, "failed-login burst"
    assert any(record.get("record_count", 0) >= 2000 for record in events), "bulk export"
    odd = [
        record
        for record in events
        if record["event"] == "login" and int(record["timestamp"][11:13]) < 5
    ]
    assert odd, "odd-hour login"
    bank_changes = Counter(
        record["object"]["id"]
        for record in events
        if record["event"] == "record.update"
        and {c["field"] for c in record["changes"]} & {"iban", "address"}
    )
    assert max(bank_changes.values()) >= 4, "rapid iban/address changes"
    assert any(
        record["event"] == "role.assign" and "admin" in record["changes"][0]["new"]
        for record in events
    ), "privilege escalation"
    assert any(
        record["event"] == "settings.update" and record["changes"][0]["new"] == "disabled"
        for record in events
    ), "audit tampering"


def test_no_suspicious_patterns_when_disabled() -> None:
    records = list(sample.generate(2000, seed=42, start=START, suspicious=False))
    assert all(record.get("record_count", 0) < 2000 for record in records)
    assert all(int(record["timestamp"][11:13]) >= 9 for record in records)


def test_rate_controls_density() -> None:
    fast = list(sample.generate(1000, seed=5, start=START, rate_per_sec=50, suspicious=False))
    slow = list(sample.generate(1000, seed=5, start=START, rate_per_sec=1, suspicious=False))
    span = [
        sample.parse_timestamp(r[-1]["timestamp"]) - sample.parse_timestamp(r[0]["timestamp"])
        for r in (fast, slow)
    ]
    assert span[0] * 10 < span[1]


def test_write_jsonl_one_object_per_line(tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    written = sample.write_jsonl(out, sample.generate(100, seed=1, start=START))
    lines = out.read_text(encoding="utf-8").splitlines()
    assert written == len(lines) == 100
    assert all(isinstance(json.loads(line), dict) for line in lines)
    sample.write_jsonl(out, sample.generate(10, seed=1, start=START), append=True)
    assert len(out.read_text(encoding="utf-8").splitlines()) == 110


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        list(sample.generate(-1, seed=1, start=START))
    with pytest.raises(ValueError):
        list(sample.generate(1, seed=1, start=START, rate_per_sec=0))
