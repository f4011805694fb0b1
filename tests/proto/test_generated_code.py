"""The committed generated code must be exactly what `make proto` produces now."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_proto"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generator = _load_generator()
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
