"""The compiled jsonlines path (msgspec, generated mapping code, cached timestamps, IPs
and actions) gives events equal in every field to the reference path it replaced
(tests/agent/mapping/reference.py): on every corpus the project has (the preset samples
with their presets, the foreign CRM log with its mapping, the benchmark's CRM
application records, the mapping-language tests' mappings) and on generated records."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.parsers import jsonlines
from agent.parsers.mapping import Plan, compile_plan
from agent.parsers.timestamps import parse_timestamp
from proto.v1 import audit_pb2 as pb
from tests.agent.mapping import reference
from tests.agent.mapping.test_language import ACTIONS, MAPPING
from tests.foreign_crm.generator import generate

ROOT = Path(__file__).resolve().parents[3]
PRESETS = ROOT / "config" / "presets"
SAMPLES = ROOT / "tests" / "agent" / "presets" / "samples"
FOREIGN = yaml.safe_load((ROOT / "tests" / "foreign_crm" / "agent-source.yaml").read_text())


def _plan(mapping: dict[str, Any], actions: dict[str, Any] | None = None) -> Plan:
    return compile_plan(jsonlines.DEFAULT_MAPPING, mapping, actions, jsonlines.FIELDS)


def assert_same(line: bytes, plan: Plan) -> pb.AuditEvent | None:
    """The compiled parse of `line` equals the reference parse, field for field."""
    got = jsonlines.parse(line, plan)
    want = reference.parse(line, plan)
    if want is None:
        assert got is None
        return None
    assert got is not None
    # Message equality compares every field, maps as maps; the deterministic
    # serialization as well, so that a difference shows as bytes too.
    assert got == want, (line, got, want)
    assert got.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)
    return got


def _preset_cases() -> list[tuple[str, Path]]:
    return [(p.stem, SAMPLES / f"{p.stem}.jsonl") for p in sorted(PRESETS.glob("*.yaml"))]


@pytest.mark.parametrize(("vendor", "samples"), _preset_cases())
def test_preset_samples_equal_reference(vendor: str, samples: Path) -> None:
    preset = yaml.safe_load((PRESETS / f"{vendor}.yaml").read_text())
    plan = _plan(preset.get("mapping") or {}, preset.get("actions"))
    lines = samples.read_bytes().splitlines()
    assert lines
    for line in lines:
        assert_same(line, plan)


def test_foreign_crm_log_equals_reference() -> None:
    source = FOREIGN["sources"][0]
    plan = _plan(source["mapping"], source["actions"])
    log = generate(7, dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC), normal_count=600)
    mapped = [assert_same(line.encode(), plan) for line in log.lines]
    # the corpus exercises the rules: translated outcomes, changes, impersonation
    assert any(e is not None and e.changes for e in mapped)
    assert any(e is not None and e.HasField("effective_user") for e in mapped)


def test_crm_application_records_equal_reference() -> None:
    from bench.corpus import sample_lines

    plan = _plan({})
    for line in sample_lines(3000, seed=5):
        event = assert_same(line.rstrip(b"\n"), plan)
        assert event is not None and event.time_unix_nano > 0


def test_mapping_language_mapping_equals_reference() -> None:
    plan = _plan(MAPPING, ACTIONS)
    records = [
        {"op": "auth.login", "result": "denied", "actor": {"login": "a", "ip": "::1"}},
        {"op": "x", "result": "ok", "extra": {"deep": {"er": [1, Decimal("2.50")]}}},
        {"ts": "2026-01-05T08:00:00+02:00", "changes": [{"attr": "a", "from": None, "to": 1}]},
        {"user.name": "literal", "user": {"name": "nested"}, "a.b": {"c": None, "d": {}}},
    ]
    for record in records:
        assert_same(json.dumps(record, default=str).encode(), plan)


# --- generated records ------------------------------------------------------------------

# Keys the mappings read (so that generated records hit their paths, literal dotted keys
# included) and others; values of every JSON type, with timestamps, IPs, outcomes and
# action names among the strings.
_KEYS = st.sampled_from(
    [
        "timestamp", "ts", "event", "op", "outcome", "result", "user", "id", "name", "email",
        "roles", "user.id", "user.name", "source_ip", "source_port", "actor", "login", "ip",
        "changes", "field", "old", "new", "attr", "from", "to", "record_count", "message",
        "object", "type", "entity", "kind", "tenant", "report", "rows", "x", "x.y", "", "é",
        "on_behalf_of", "details", "granted_role", "session", "client", "ua", "device",
    ]
)  # fmt: skip
_STRINGS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "2026-01-05T08:00:00.200Z", "2026-01-05 08:00:00,5+02:00", "2026-01-05T08:00:60Z",
            "2026-13-05T08:00:00Z", "2026-01-05T08:00:00", " 2026-01-05T08:00:00Z ",
            "1767600000", "1767600000.5", "-5", "10.1.2.3", "::1", "fe80::1%eth0", "[::1]",
            "999.1.1.1", "success", "failed", "FAILURE", "ok", "denied", "login", "Login Failed",
            "record.view", "auth.login", "contact.update", "user.role_change", "role.grant",
            "db.drop.table", "\ud800", "Müller", "65535", "65536",
        ]
    ),
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    _STRINGS,
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=12,
)
_RECORDS = st.dictionaries(_KEYS, _VALUES, max_size=10)
_PLANS = {
    "default": _plan({}),
    "foreign": _plan(FOREIGN["sources"][0]["mapping"], FOREIGN["sources"][0]["actions"]),
    "language": _plan(MAPPING, ACTIONS),
    "dotted": _plan(
        {
            "user.name": "x.y",
            "user.id": "a.b.c",
            "source.ip": ["actor.ip", "ip"],
            "record_count": {"path": "report.rows", "default": 0},
            "message": "x",
        }
    ),
}


def _line(record: Any) -> bytes:
    # ensure_ascii keeps lone surrogates encodable (as \ud800 escapes)
    return json.dumps(record, default=str).encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=_RECORDS, plan=st.sampled_from(sorted(_PLANS)), ascii_only=st.booleans())
def test_generated_records_equal_reference(record: Any, plan: str, ascii_only: bool) -> None:
    line = (
        _line(record)
        if ascii_only
        else json.dumps(record, default=str, ensure_ascii=False).encode("utf-8", "replace")
    )
    assert_same(line, _PLANS[plan])


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode)))
def test_arbitrary_lines_equal_reference(data: bytes) -> None:
    """Blank lines, invalid UTF-8, invalid JSON, NaN, non-objects: same events, same
    parse_error reasons."""
    assert_same(data.replace(b"\n", b" "), _PLANS["default"])


# Lines at the edges of what the readers accept (the compiled kernel's tests reuse them).
EDGE_LINES = [
    b'{"a": NaN}',
    b'{"a": "\\ud800"}',
    b"[1, 2]",
    b'{"a": 1} x',
    b"\xef\xbb\xbf{}",
    b'{"timestamp": 1.5e3, "x": 1E+2, "n": 123456789012345678901234567890}',
    b'{"x":' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'\xff{"event": "login"}',
    b"  \t ",
]


@pytest.mark.parametrize("line", EDGE_LINES)
def test_edge_lines_equal_reference(line: bytes) -> None:
    assert_same(line, _PLANS["default"])


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(min_value=dt.datetime(1700, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    micros=st.integers(0, 999_999),
    offset=st.integers(-23 * 60, 23 * 60),
    repeat=st.booleans(),
)
def test_cached_timestamps_equal_reference(
    moment: dt.datetime, micros: int, offset: int, repeat: bool
) -> None:
    """The per-second cache gives what the uncached arithmetic gives, first and later."""
    sign = "-" if offset < 0 else "+"
    zone = f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}{zone}"
    if repeat:
        parse_timestamp(text[:19] + zone)  # the same second seen before, other fraction
    assert parse_timestamp(text) == reference.parse_timestamp(text)
