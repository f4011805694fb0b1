"""The committed generated code must be exactly what `make proto` produces now."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generator = load_script("gen_proto")
    produced = generator.generate(tmp_path)
    assert produced, "generator produced nothing"
    stale = []
    for fresh in produced:
        committed = ROOT / "proto" / "v1" / fresh.name
        if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
            stale.append(fresh.name)
    assert not stale, f"generated code is stale, run `make proto`: {stale}"


def test_schema_round_trip() -> None:
    from proto.v1 import audit_pb2

    event = audit_pb2.AuditEvent(sequence=7, action="record.update")
    event.changes.add(field="iban", old_value="DE00", new_value="DE99")
    event.record_count = 0  # explicit zero is distinguishable from absent
    decoded = audit_pb2.AuditEvent.FromString(event.SerializeToString())
    assert decoded.changes[0].old_value == "DE00"
    assert decoded.HasField("record_count")
    assert not audit_pb2.AuditEvent().HasField("record_count")
