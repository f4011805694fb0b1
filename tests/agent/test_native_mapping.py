"""The agent's compiled JSON-lines kernel (native/src/mapping.rs, `agent.native`) against
the Python parser it stands in for (`agent.parsers.jsonlines.parse`, itself held to
tests/agent/mapping/reference.py): every line the kernel builds is the same event in
every field and in its deterministic bytes; every line it declines is parsed in Python
by `make_parser`'s function, so that function gives Python's events either way.

Where cargo is installed (`make venv` builds the kernel then) a missing kernel fails
here instead of skipping, so the suite cannot pass without testing it unnoticed."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import native, oversize
from agent.checkpoint import FileOffset
from agent.parsers import jsonlines
from agent.parsers.mapping import Plan, compile_plan
from agent.spool import EncodedEntry, Entry, Spool
from agent.wire import sequence_field, stream_field
from proto import integrity
from proto.v1 import audit_pb2 as pb
from tests.agent.mapping.test_compiled import _KEYS, _RECORDS, _STRINGS, EDGE_LINES
from tests.helpers import require_kernel

require_kernel(native.USABLE, native.DESCRIPTION, "the agent's Python parsing")


def _plan(mapping: dict[str, Any], actions: dict[str, Any] | None = None) -> Plan:
    return compile_plan(jsonlines.DEFAULT_MAPPING, mapping, actions, jsonlines.FIELDS)


# Plans the kernel takes: the default mapping, and overrides of plain one- and two-key
# paths (literal dotted keys such as "user.id" among the generated keys) with a source
# vocabulary that renames, defines and implies outcomes.
SOURCES: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
    "default": ({}, None),
    "renamed": (
        {
            "timestamp": "ts",
            "action": "op",
            "outcome": "result",
            "user.name": "actor.login",
            "user.id": "user.id",
            "user.target.roles": "granted_role",
            "user.effective.name": "on_behalf_of",
            "organization.id": "tenant",
            "source.ip": "ip",
            "source.port": "client.port",
            "object.type": "entity.kind",
            "record_count": "report.rows",
            "message": "x.y",
        },
        {
            "auth.login": "Login",
            "report.export": "record.export",
            "wire.approve": {
                "action": "payment.approve",
                "audit_category": "data_operation",
                "event_category": ["database"],
                "event_type": ["change"],
                "outcome": "success",
            },
        },
    ),
}
PLANS = {name: _plan(*source) for name, source in SOURCES.items()}
MAPPERS = {name: native.jsonlines_mapper(plan) for name, plan in PLANS.items()}
# What the agent runs: the kernel, and Python for each line it declines.
PARSERS = {name: jsonlines.make_parser(*source) for name, source in SOURCES.items()}


def built_or_declined(line: bytes, name: str) -> bool:
    """True when the kernel built `line` (and it equals Python's event), False when it
    declined it."""
    mapper = MAPPERS[name]
    assert mapper is not None
    data = mapper(line)
    if data is None:
        return False
    got = pb.AuditEvent.FromString(data)
    want = jsonlines.parse(line, PLANS[name])
    assert want is not None
    assert got == want, (line, got, want)
    # The kernel writes Python's deterministic serialization itself, byte for byte.
    assert data == want.SerializeToString(deterministic=True)
    assert_stamped_same(line, name, want)
    return True


OBSERVER = pb.Observer(agent_id="crm-host-1", hostname="crm01", agent_version="0.1.0")
STAMP = pb.AuditEvent(
    observer=OBSERVER,
    log=pb.LogOrigin(file_path="/var/log/crm/audit.jsonl", source_name="crm", format="jsonlines"),
).SerializeToString()


def assert_stamped_same(line: bytes, name: str, parsed: pb.AuditEvent) -> None:
    """The kernel's stamped bytes, numbered as the spool numbers them, are the bytes the
    Python path gives (agent.pipeline stamping, then event_bytes_v2), and its effective
    time the same."""
    mapper = MAPPERS[name]
    assert mapper is not None
    for observed, offset in ((1_767_600_000_123_456_789, 4096), (0, 0)):
        stamped = mapper.stamped(line, STAMP, observed, offset)
        assert stamped is not None
        body, time = stamped
        want = pb.AuditEvent()
        want.CopyFrom(parsed)
        want.MergeFromString(STAMP)
        want.observed_unix_nano = observed
        want.log.offset = offset
        want.sequence = 123_456
        want.stream_id = "0123456789abcdef"
        numbered = sequence_field(123_456) + body + stream_field("0123456789abcdef")
        assert numbered == integrity.event_bytes_v2(want)
        assert time == integrity.effective_time(want)


def test_the_spool_stores_kernel_entries_as_it_stores_parsed_events(tmp_path: Path) -> None:
    """The same lines, appended once as events parsed and stamped in Python and once as
    the kernel's encoded entries: the two spools read back the same records."""
    from bench.corpus import sample_lines

    lines = [line.rstrip(b"\n") for line in sample_lines(200, seed=9)]
    # Two records whose events exceed the size limit, which the spool cuts either way.
    big = {"event": "record.view", "message": "m" * (oversize.LIMIT + 10), "x": "y" * 5000}
    lines[50] = lines[150] = json.dumps(big).encode()
    mapper = MAPPERS["default"]
    assert mapper is not None
    position = FileOffset("/var/log/crm/audit.jsonl", 10, "1:2")
    parsed, encoded = [], []
    for offset, line in enumerate(lines):
        event = jsonlines.parse(line, PLANS["default"])
        assert event is not None
        event.MergeFromString(STAMP)
        event.observed_unix_nano = 1_767_600_000_000_000_000 + offset
        event.log.offset = offset
        parsed.append(Entry(event, "1:2", position, len(line)))
        stamped = mapper.stamped(line, STAMP, 1_767_600_000_000_000_000 + offset, offset)
        assert stamped is not None
        encoded.append(EncodedEntry(*stamped, "crm", "1:2", position, len(line)))
    records = []
    for name, entries in (("parsed", parsed), ("encoded", encoded)):
        spool = Spool(tmp_path / name, max_bytes=1 << 24, segment_bytes=1 << 20)
        spool.open(0, stream_id="0123456789abcdef")
        spool.append(entries[:100])
        spool.append(entries[100:])
        reader = spool.reader(1)
        records.append(reader.read(1000))
        reader.close()
        spool.close()
    assert records[0] == records[1]
    assert len(records[0][0]) == 200 and records[0][1] == []
    cut = pb.AuditEvent.FromString(records[1][0][50].event)
    assert oversize.FLAG in cut.flags and len(records[1][0][50].event) <= oversize.LIMIT + 64


def test_plans_with_rules_or_deep_paths_stay_in_python() -> None:
    assert native.jsonlines_mapper(_plan({"user.name": "a.b.c"})) is None
    assert native.jsonlines_mapper(_plan({"source.ip": ["actor.ip", "ip"]})) is None
    assert (
        native.jsonlines_mapper(_plan({"outcome": {"path": "r", "values": {"ok": "success"}}}))
        is None
    )
    assert all(mapper is not None for mapper in MAPPERS.values())


def test_make_parser_uses_the_kernel_and_equals_python_on_the_crm_corpus() -> None:
    from bench.corpus import sample_lines

    parse = PARSERS["default"]
    plan = PLANS["default"]
    lines = [line.rstrip(b"\n") for line in sample_lines(3000, seed=5)]
    # Every line of the CRM application's own log is built by the kernel, none declined.
    assert all(built_or_declined(line, "default") for line in lines)
    for line in lines[:300]:
        assert parse(line) == jsonlines.parse(line, plan)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=_RECORDS, name=st.sampled_from(sorted(PLANS)), ascii_only=st.booleans())
def test_generated_records_are_built_as_python_builds_them(
    record: Any, name: str, ascii_only: bool
) -> None:
    line = json.dumps(record, default=str, ensure_ascii=ascii_only).encode("utf-8", "replace")
    built_or_declined(line, name)
    assert PARSERS[name](line) == jsonlines.parse(line, PLANS[name])


# Records shaped like a CRM log's (the targets' keys, values of the shapes each takes and
# the odd ones next to them), so that most are built rather than declined.
_TIMES = st.one_of(
    st.sampled_from(
        [
            "2026-01-05T08:00:00Z", "2026-01-05t08:00:00.123456789z", "2026-01-05 08:00:00,5 +0200",
            "2024-02-29T23:59:60-05:30", "2026-01-05T08:00:00+23:59", "2026-01-05T08:00:00+24:00",
            "2026-01-05T08:00:00.1234567891Z", "1969-12-31T23:59:59.999Z", "2262-04-11T23:47:16Z",
            "1677-09-21T00:12:43Z", "2026-01-05T08:00:00 \x1fZ", "2026-01-05T08:00:00",
        ]
    ),
    st.builds(
        lambda y, mo, d, h, mi, s, f, z: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{f}{z}",
        st.integers(1600, 2300), st.integers(0, 13), st.integers(0, 32), st.integers(0, 24),
        st.integers(0, 60), st.integers(0, 61),
        st.sampled_from(["", ".5", ",000001", ".123456789"]),
        st.sampled_from(["Z", "+01:00", "-0930", "+99:00", "-00:75"]),
    ),
)  # fmt: skip
_NUMBERS = st.one_of(
    st.integers(-(2**65), 2**65),
    st.decimals(allow_nan=False, allow_infinity=False, places=2),
    st.sampled_from([Decimal("0.05"), Decimal("1E+5"), Decimal("12.50"), Decimal("-0.0")]),
)
_TEXT = st.one_of(
    _STRINGS, st.text(max_size=20), st.sampled_from(['a"b\\c\n\x01\x7f\u2028', "ü€😀"])
)
_SCALAR = st.one_of(st.none(), st.booleans(), _NUMBERS, _TEXT)
_NESTED = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=3)),
    max_leaves=6,
)
_ROLES = st.one_of(
    st.lists(st.one_of(st.none(), _TEXT, st.booleans()), max_size=3), _SCALAR, _NESTED
)
_CHANGE = st.fixed_dictionaries(
    {"field": st.one_of(_TEXT, st.integers(), st.none())},
    optional={"old": _NESTED, "new": _NESTED, "x": _SCALAR},
)
_ADDRESSES = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(
        ["10.020.1.1", " 10.1.1.1 ", "fe80::1%eth0", "::ffff:1.2.3.4", "1.2.3", "x", ""]
    ),
)
_PORTS = st.one_of(
    st.integers(-2, 70_000),
    st.sampled_from(["443", " 8080 ", "0080", "65536", "8O", "", "٣"]),
    _NESTED,
)
_CRM_RECORDS = st.fixed_dictionaries(
    {},
    optional={
        "timestamp": st.one_of(_TIMES, _NESTED),
        "ts": _TIMES,
        "event": st.one_of(_STRINGS, _SCALAR),
        "op": st.sampled_from(["auth.login", "Report Export", "wire.approve", "other"]),
        "outcome": st.one_of(
            st.sampled_from(["success", "FAILED", " Succeeded\t", "failure\x1c", "ok", "İ"]),
            _SCALAR,
        ),
        "user": st.one_of(
            st.fixed_dictionaries(
                {}, optional={"id": _SCALAR, "name": _TEXT, "email": _NESTED, "roles": _ROLES}
            ),
            _NESTED,
        ),
        "user.id": _SCALAR,
        "source_ip": st.one_of(_ADDRESSES, _SCALAR),
        "ip": _ADDRESSES,
        "source_port": _PORTS,
        "client": st.fixed_dictionaries({}, optional={"port": _PORTS, "ua": _TEXT}),
        "changes": st.one_of(st.lists(_CHANGE, max_size=3), _NESTED),
        "record_count": st.one_of(_PORTS, st.integers(0, 2**64 + 5)),
        "report": st.fixed_dictionaries({}, optional={"rows": _PORTS, "name": _TEXT}),
        "object": _NESTED,
        "x.y": _TEXT,
        "x": _NESTED,
        "granted_role": _ROLES,
        "message": _TEXT,
        "extra": _NESTED,
    },
)  # fmt: skip

_COUNTS = {"built": 0, "declined": 0}


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=_CRM_RECORDS, name=st.sampled_from(sorted(PLANS)), ascii_only=st.booleans())
def test_crm_shaped_records_are_built_as_python_builds_them(
    record: dict[str, Any], name: str, ascii_only: bool
) -> None:
    line = json.dumps(record, default=str, ensure_ascii=ascii_only).encode("utf-8", "replace")
    built = built_or_declined(line, name)
    _COUNTS["built" if built else "declined"] += 1
    assert PARSERS[name](line) == jsonlines.parse(line, PLANS[name])


def test_the_generated_records_were_mostly_built() -> None:
    """The differential test above compares something: most CRM-shaped records are built
    by the kernel, not declined (runs after it, in file order)."""
    total = _COUNTS["built"] + _COUNTS["declined"]
    assert total >= 1000
    assert _COUNTS["built"] >= total // 4, _COUNTS


@pytest.mark.parametrize(
    "line",
    [
        *EDGE_LINES,
        b'{"event": "login", "a": "\\udc00x"}',
        b'{"event": "login", "event": "logout", "user": {"id": 1, "id": null}}',
        b'{"user.id": null, "user": {"id": "nested"}}',
        b'{"event": "login"  ,  "x" : [ 1 , { "y" : "\\u00e9\\/" } ] }\r',
        b"{}",
        b'{"a": "\\t\\b\\f"}',
        b'{"a": "x\ty"}',
    ],
)
def test_edge_lines(line: bytes) -> None:
    for name in PLANS:
        assert PARSERS[name](line) == jsonlines.parse(line, PLANS[name])


def test_a_new_action_is_resolved_once_through_the_vocabulary() -> None:
    plan = PLANS["renamed"]
    mapper = native.jsonlines_mapper(plan)
    assert mapper is not None
    for op in ("wire.approve", "Report Export", "never.heard.of", "wire.approve"):
        data = mapper(json.dumps({"op": op}).encode())
        assert data is not None
        assert pb.AuditEvent.FromString(data) == jsonlines.parse(
            json.dumps({"op": op}).encode(), plan
        )


def test_the_encoder_is_only_for_jsonlines_sources_without_privacy_options() -> None:
    """Privacy rules apply to parsed events (in Python), so such a source, like every
    other format, is parsed; a plain JSON-lines source gets the kernel's encoder."""
    from agent.parsers import get_source
    from agent.parsers.options import FormatOptions
    from agent.parsers.privacy import PrivacyOptions, Redaction

    def encoder(*args: Any) -> Any:
        return get_source(*args)[1]

    assert encoder("jsonlines", {}) is not None
    assert encoder("jsonlines", {}, FormatOptions()) is not None
    private = FormatOptions(privacy=PrivacyOptions(redact={"user.name": Redaction()}))
    assert encoder("jsonlines", {}, private) is None
    assert encoder("jsonlines", {"outcome": {"path": "r", "values": {"ok": "success"}}}) is None
    assert encoder("pgaudit", {}) is None


def test_the_pipeline_parser_beside_the_encoder_is_pythons(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the encoder leaves (lines it declined) is not given to the kernel again: a
    kernel whose line parser fails the test leaves the pipeline's parser unaffected."""
    from agent.parsers import get_source

    real = native.jsonlines_mapper

    class EncoderOnly:
        def __init__(self, plan: Plan) -> None:
            mapper = real(plan)
            assert mapper is not None
            self.stamped = mapper.stamped

        def __call__(self, line: bytes) -> bytes | None:
            raise AssertionError("the kernel was asked to parse a line the encoder left")

    monkeypatch.setattr(native, "jsonlines_mapper", EncoderOnly)
    parse, encode = get_source("jsonlines", {})
    assert encode is not None
    declined = b'{"event": "login", "n": 1e5}'
    assert encode(declined, STAMP, 1, 0) is None
    event = parse(declined)
    assert event is not None and "parse_error" not in event.flags
    assert event == jsonlines.parse(declined, PLANS["default"])
