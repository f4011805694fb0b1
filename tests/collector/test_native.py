"""The compiled collector kernel (native/, `collector.native`) against the Python
reference: for generated events of every shape, the kernel's JSON parses to exactly the
document `to_document` + the integrity fields build (what `crm-audit verify` re-derives),
with the same _id, sequence, time and original line; what it declines is built in
Python, so `documents_v2` gives the same documents with and without it. Its scanner
gives `verify_batch` the same verdict as parsing in Python, on genuine and tampered
batches.

Where cargo is installed (`make venv` builds the kernel then) a missing kernel fails
here instead of skipping, so the suite cannot pass without testing it unnoticed."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector import native
from collector.documents import DocumentBytes, EventDocument, to_document
from collector.formatv2 import documents_v2, stream_of
from collector.gate import event_integrity_fields
from proto import integrity
from proto.v1 import audit_pb2 as pb
from tests.collector.conftest import make_event
from tests.collector.v2sender import V2Stream
from tests.helpers import require_kernel

require_kernel(native.KERNEL is not None, native.DESCRIPTION, "the collector's Python path")

KERNEL = native.KERNEL
SCANNER = native.SCANNER
AGENT = "agent-1"
RECEIVED = 1_795_000_000_123_456_789
STREAM = "0123456789abcdef"


def reference(
    data: bytes, head: bytes | None, event_hash: bytes, inline_bytes: bool = False
) -> tuple[Any, ...]:
    """What `documents_v2` builds in Python for one event's bytes."""
    event = pb.AuditEvent()
    event.ParseFromString(data)
    doc = to_document(
        event, agent_id=AGENT, received_unix_nano=RECEIVED, stream_id=stream_of(event)
    )
    doc.source.setdefault("integrity", {}).update(
        event_integrity_fields(data, head, event_hash, inline_bytes=inline_bytes)
    )
    return doc.doc_id, doc.sequence, doc.timestamp_unix_nano, doc.source, event.original


def run_kernel(
    datas: list[bytes], heads: list[bytes | None], inline_bytes: bool = False
) -> list[Any]:
    hashes = [hashlib.sha256(d).digest() for d in datas]
    assert KERNEL is not None
    return list(KERNEL(datas, heads, hashes, AGENT, RECEIVED, inline_bytes))


def assert_same(data: bytes, head: bytes | None = b"\x07" * 32, inline_bytes: bool = False) -> bool:
    """Kernel == reference for one event; False when the kernel declined it."""
    [built] = run_kernel([data], [head], inline_bytes)
    if built is None:
        return False
    doc_id, sequence, timestamp, body, original = built
    expected = reference(data, head, hashlib.sha256(data).digest(), inline_bytes)
    assert (doc_id, sequence, timestamp, orjson.loads(body), original) == expected
    return True


# --- generated events ----------------------------------------------------------------

texts = st.text(max_size=12) | st.sampled_from(["", "a", "Ünïcødé ✓", 'q"uo\\te', "\x01\n\t\x7f"])
ips = st.sampled_from(
    [
        "",
        "10.0.0.1",
        "255.255.255.255",
        "0.0.0.0",
        "::1",
        "fe80::1%eth0",
        "::ffff:1.2.3.4",
        "bad",
        " 1.2.3.4",
        "010.1.1.1",
        "1.2.3.256",
        "1.2.3",
        "::1.2.3.4",
        "1:2:3:4:5:6:7:8:9",
        "2001:DB8::1",
        "::01.2.3.4",
    ]
) | st.ip_addresses(v=6).flatmap(
    lambda a: st.sampled_from([str(a), a.exploded, a.exploded.upper(), str(a).upper()])
)
numbers = st.sampled_from(
    [
        "0",
        "-0",
        "007",
        "42",
        "-17",
        "123456789012345678",
        "1234567890123456789",
        "1.5",
        "-0.25",
        "1500.50",
        "1e5",
        "+3",
        " 4",
        "nan",
        "inf",
        "1_000",
        "",
        "abc",
        "1.",
        ".5",
        "99999999999999999999.5",
    ]
)
booleans = st.sampled_from(["true", "false", "True", "1", ""])
times = st.sampled_from([0, -1, -5_000_000_000, 1, 1_764_244_800_123_456_789, 2**63 - 1])
collector_flags = st.sampled_from(
    [
        "missing_timestamp",
        "invalid_timestamp",
        "observer_agent_id_mismatch",
        "parse_error",
        "line_truncated",
    ]
)
attribute_keys = st.sampled_from(
    [
        "k",
        "observed_unix_nano_raw",
        "time_unix_nano_raw",
        "observer_agent_id_raw",
        "observer_agent_id_raw.collector",
        "source_ip_raw",
    ]
) | st.text(min_size=1, max_size=8)


@st.composite
def users(draw: st.DrawFn) -> pb.User:
    return pb.User(
        id=draw(texts),
        name=draw(texts),
        email=draw(texts),
        roles=draw(st.lists(texts, max_size=3)),
    )


@st.composite
def changes(draw: st.DrawFn) -> pb.FieldChange:
    change = pb.FieldChange(field=draw(texts))
    for side in ("old", "new"):
        kind = draw(st.sampled_from([0, 1, 2, 3, 7]))
        setattr(change, f"{side}_type", kind)
        if draw(st.booleans()):
            value = draw(numbers if kind == 1 else booleans if kind == 2 else texts)
            setattr(change, f"{side}_value", value)
    return change


@st.composite
def events(draw: st.DrawFn) -> pb.AuditEvent:
    event = pb.AuditEvent(
        sequence=draw(st.integers(0, 2**64 - 1)),
        time_unix_nano=draw(times),
        observed_unix_nano=draw(times),
        event_category=draw(st.lists(texts, max_size=2)),
        event_type=draw(st.lists(texts, max_size=2)),
        action=draw(texts),
        outcome=draw(st.sampled_from([0, 1, 2, 9])),
        audit_category=draw(st.sampled_from([0, 1, 2, 3, 11])),
        session_id=draw(texts),
        changes=draw(st.lists(changes(), max_size=3)),
        message=draw(texts),
        original=draw(texts),
        flags=draw(st.lists(collector_flags | texts, max_size=2)),
        parse_error=draw(st.sampled_from(["", "bad json"])),
        attributes=draw(st.dictionaries(attribute_keys, texts, max_size=3)),
        chain_hash=draw(st.binary(max_size=4)),
        stream_id=draw(st.sampled_from([STREAM, STREAM, "", "XYZ", "0123456789ABCDEF"])),
    )
    if draw(st.booleans()):
        event.observer.CopyFrom(
            pb.Observer(
                agent_id=draw(st.sampled_from(["", AGENT, "someone-else"])),
                hostname=draw(texts),
                agent_version=draw(texts),
            )
        )
    for name in ("user", "effective_user", "target_user"):
        if draw(st.booleans()):
            getattr(event, name).CopyFrom(draw(users()))
    if draw(st.booleans()):
        event.organization.CopyFrom(pb.Organization(id=draw(texts), name=draw(texts)))
    if draw(st.booleans()):
        event.source.CopyFrom(
            pb.Source(
                ip=draw(ips),
                port=draw(st.sampled_from([0, 1, 443, 65535, 65536, 2**32 - 1])),
                device_id=draw(texts),
                user_agent=draw(texts),
            )
        )
    if draw(st.booleans()):
        event.object.CopyFrom(pb.CrmObject(type=draw(texts), id=draw(texts), name=draw(texts)))
    if draw(st.booleans()):
        event.record_count = draw(st.integers(0, 2**64 - 1))
    if draw(st.booleans()):
        event.log.CopyFrom(
            pb.LogOrigin(
                file_path=draw(texts),
                offset=draw(st.sampled_from([0, 1, 2**64 - 1])),
                source_name=draw(texts),
                format=draw(texts),
            )
        )
    return event


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events(), st.sampled_from([None, b"", b"\x01" * 32]), st.booleans())
def test_kernel_documents_equal_the_python_reference(
    event: pb.AuditEvent, head: bytes | None, inline_bytes: bool
) -> None:
    data = event.SerializeToString()
    [built] = run_kernel([data], [head], inline_bytes)
    if built is not None:
        assert_same(data, head, inline_bytes)
        stored = orjson.loads(built[3])["integrity"].get("canonical")
        assert (stored == base64.b64encode(data).decode()) if inline_bytes else stored is None


def realistic_event(sequence: int) -> pb.AuditEvent:
    """The collector tests' fully populated event, of our stream, with a typed number
    change (the kernel types plain decimals itself)."""
    changes = [
        pb.FieldChange(field="iban", old_value="DE89", new_value="DE44"),
        pb.FieldChange(
            field="limit",
            old_value="1500.50",
            new_value="2000",
            old_type=pb.FieldChange.VALUE_TYPE_NUMBER,
            new_type=pb.FieldChange.VALUE_TYPE_NUMBER,
        ),
    ]
    event: pb.AuditEvent = make_event(sequence, AGENT, stream_id=STREAM, changes=changes)
    return event


def test_a_realistic_event_is_built_by_the_kernel() -> None:
    assert assert_same(realistic_event(5).SerializeToString())


@pytest.mark.parametrize("ip", ["2001:DB8:0:0:0:0:0:1", "1:0:0:2:0:0:0:3", "::1.2.3.4", "::"])
def test_ipv6_sources_are_built_by_the_kernel(ip: str) -> None:
    event = realistic_event(6)
    event.source.ip = ip
    assert assert_same(event.SerializeToString())


@pytest.mark.parametrize(
    "change",
    [
        {"source": pb.Source(ip="fe80::1%eth0")},
        {"source": pb.Source(ip="::ffff:10.1.2.3")},
        {"source": pb.Source(ip="not-an-ip")},
        {"source": pb.Source(port=70000)},
        {
            "changes": [
                pb.FieldChange(
                    field="x", new_value="1e5", new_type=pb.FieldChange.VALUE_TYPE_NUMBER
                )
            ]
        },
        {"stream_id": "not-a-stream"},
    ],
    ids=["ipv6-zone", "ipv4-mapped", "invalid-ip", "port", "exponent", "stream"],
)
def test_what_the_kernel_declines_is_built_in_python(change: dict[str, Any]) -> None:
    event = make_event(3, AGENT, **{"stream_id": STREAM, **change})
    data = event.SerializeToString()
    assert run_kernel([data], [None]) == [None]

    # documents_v2 builds the declined event in Python, between two the kernel builds.
    datas = [realistic_event(2).SerializeToString(), data, realistic_event(4).SerializeToString()]
    batch = pb.Batch(format_version=integrity.FORMAT_V2, event_bytes=datas)
    # Unsealed: parsed, not verified. The kernel's run reads the batch with its scanner
    # (no event objects: the declined one is parsed on demand), the reference without.
    verdict = integrity.verify_batch(batch, AGENT, {})
    scanned = integrity.verify_batch(batch, AGENT, {}, scanner=SCANNER)
    assert not scanned.events and len(scanned.facts) == 3
    with_kernel = documents_v2(
        batch,
        scanned,
        agent_id=AGENT,
        received_unix_nano=RECEIVED,
        deadletter_index="dl",
        kernel=KERNEL,
    )
    without = documents_v2(
        batch,
        verdict,
        agent_id=AGENT,
        received_unix_nano=RECEIVED,
        deadletter_index="dl",
        kernel=None,
    )
    kinds = [type(doc) for doc, _ in with_kernel.events]
    assert kinds == [DocumentBytes, EventDocument, DocumentBytes]
    assert all(type(doc) is EventDocument for doc, _ in without.events)
    for (mine, my_line), (theirs, their_line) in zip(
        with_kernel.events, without.events, strict=True
    ):
        assert isinstance(theirs, EventDocument)
        source = orjson.loads(mine.body) if isinstance(mine, DocumentBytes) else mine.source
        assert (mine.doc_id, mine.sequence, mine.timestamp_unix_nano, source, my_line) == (
            theirs.doc_id,
            theirs.sequence,
            theirs.timestamp_unix_nano,
            theirs.source,
            their_line,
        )


def test_bytes_that_do_not_decode_are_declined() -> None:
    assert run_kernel([b"\xff\xff\xff"], [None]) == [None]


def test_mismatched_lists_are_refused() -> None:
    import crm_audit_native  # the module itself: collector.native guards its functions

    with pytest.raises(ValueError, match="one entry per event"):
        crm_audit_native.documents([b""], [], [], AGENT, RECEIVED, False)


# --- the scanner ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), min_size=1, max_size=4))
def test_scanned_facts_and_hashes_equal_python_parsing(batch_events: list[pb.AuditEvent]) -> None:
    datas = [e.SerializeToString() for e in batch_events]
    assert SCANNER is not None
    scanned = SCANNER(datas, integrity.DOMAIN_EVENT_V2)
    assert scanned is not None
    facts, hashes = scanned
    assert hashes == [integrity.event_hash(d) for d in datas]
    assert [(f.sequence, f.stream_id, f.time_unix_nano, f.observed_unix_nano) for f in facts] == [
        (e.sequence, e.stream_id, e.time_unix_nano, e.observed_unix_nano) for e in batch_events
    ]


def test_the_scanner_refuses_what_protobuf_refuses() -> None:
    good = realistic_event(1).SerializeToString()
    invalid_utf8 = b"\x3a\x02\xc3\x28"  # field 7 (action), a string, not UTF-8
    for bad in (b"\xff\xff\xff", good[:-3], invalid_utf8):
        with pytest.raises(Exception):  # noqa: B017 - the decoder's own error type
            pb.AuditEvent.FromString(bad)
        assert SCANNER is not None
        assert SCANNER([good, bad], integrity.DOMAIN_EVENT_V2) is None


def tampered_batches(key: Ed25519PrivateKey) -> dict[str, pb.Batch]:
    stream = V2Stream(AGENT, key)
    genuine = stream.batch(5)
    out = {"genuine": genuine, "next": stream.batch(3)}

    def copy() -> pb.Batch:
        return pb.Batch.FromString(genuine.SerializeToString())

    altered = copy()
    event = pb.AuditEvent.FromString(altered.event_bytes[2])
    event.user.name = "mallory"
    altered.event_bytes[2] = integrity.event_bytes_v2(event)
    out["altered"] = altered
    swapped = copy()
    swapped.event_bytes[1], swapped.event_bytes[3] = genuine.event_bytes[3], genuine.event_bytes[1]
    out["swapped"] = swapped
    dropped = copy()
    del dropped.event_bytes[4]
    out["dropped"] = dropped
    garbage = copy()
    garbage.event_bytes[0] = b"\xff\xff\xff"
    out["garbage"] = garbage
    other = copy()
    event = pb.AuditEvent.FromString(other.event_bytes[1])
    event.stream_id = "fedcba9876543210"
    other.event_bytes[1] = integrity.event_bytes_v2(event)
    out["other stream"] = other
    resealed = copy()
    resealed.seal.max_event_time_unix_nano += 1
    out["time range"] = resealed
    unsealed = copy()
    unsealed.ClearField("seal")
    out["unsealed"] = unsealed
    return out


def test_verdicts_with_the_scanner_equal_those_without() -> None:
    key = Ed25519PrivateKey.generate()
    keys = {integrity.key_id(key.public_key()): key.public_key()}
    for name, batch in tampered_batches(key).items():
        mine = integrity.verify_batch(batch, AGENT, keys, scanner=SCANNER)
        theirs = integrity.verify_batch(batch, AGENT, keys)
        assert (
            [(f.kind, f.first, f.last, f.detail) for f in mine.findings],
            mine.signature_ok,
            mine.canonical,
            mine.hashes,
            mine.event_hashes,
            mine.stream_id,
            [(f.sequence, f.stream_id) for f in mine.facts],
        ) == (
            [(f.kind, f.first, f.last, f.detail) for f in theirs.findings],
            theirs.signature_ok,
            theirs.canonical,
            theirs.hashes,
            theirs.event_hashes,
            theirs.stream_id,
            [(f.sequence, f.stream_id) for f in theirs.facts],
        ), name
        if len(mine.facts) == len(batch.event_bytes):
            assert [mine.event_at(i) for i in range(len(mine.facts))] == theirs.events, name


def test_a_failing_kernel_costs_speed_not_the_batch(caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object) -> Any:
        raise RuntimeError("kernel bug")

    datas = [realistic_event(1).SerializeToString(), realistic_event(2).SerializeToString()]
    batch = pb.Batch(format_version=integrity.FORMAT_V2, event_bytes=datas)
    verdict = integrity.verify_batch(batch, AGENT, {}, scanner=native.guarded_scanner(broken))
    assert len(verdict.facts) == 2 and len(verdict.events) == 2  # parsed in Python
    built = documents_v2(
        batch,
        verdict,
        agent_id=AGENT,
        received_unix_nano=RECEIVED,
        deadletter_index="dl",
        kernel=native.guarded_kernel(broken),
    )
    assert [type(doc) for doc, _ in built.events] == [EventDocument, EventDocument]
    assert "compiled kernel failed reading a batch (RuntimeError: kernel bug)" in caplog.text
    assert "compiled kernel failed building documents (RuntimeError: kernel bug)" in caplog.text
