"""End-to-end limits on the agent side: config bounds from proto.limits, events cut to
fit a batch, and batches refused as too large split in halves (real gRPC over mTLS)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent import AgentConfig
from agent.oversize import ORIGINAL_BYTES, fit
from proto import integrity, limits
from proto.v1 import audit_pb2 as pb
from tests.agent.certs import Pki
from tests.agent.fake_collector import FakeCollector, Server, events
from tests.agent.test_ship import make_config, pki, running, write_lines
from tests.processes import wait_for

__all__ = ["pki"]


def test_an_event_over_the_limit_is_cut_flagged_and_keeps_its_size() -> None:
    original = "x" * 3000
    event = pb.AuditEvent(time_unix_nano=1, action="record.view", original=original)
    event.attributes["big"] = "y" * 3000
    event.attributes["small"] = "z"
    event.log.file_path = "/var/log/a.jsonl"
    assert fit(event, 3001, limit=2000)
    assert event.ByteSize() <= 2000
    assert "line_truncated" in event.flags
    assert event.attributes[ORIGINAL_BYTES] == "3001"
    assert event.time_unix_nano == 1 and event.log.file_path == "/var/log/a.jsonl"
    assert original.startswith(event.original) and len(event.original) > 1000


def test_an_event_under_the_limit_is_left_alone() -> None:
    event = pb.AuditEvent(time_unix_nano=1, original="small")
    copy = pb.AuditEvent()
    copy.CopyFrom(event)
    assert not fit(event, 5)
    assert event == copy


def test_a_multibyte_original_is_cut_on_a_character_boundary() -> None:
    event = pb.AuditEvent(original="é" * 2000)
    assert fit(event, 4000, limit=1001)
    assert event.ByteSize() <= 1001
    assert set(event.original) == {"é"}


def _config(tmp_path: Path, pki: Pki, **changes: Any) -> AgentConfig:
    config = make_config(tmp_path, pki, 1)
    data = config.model_dump(mode="json")
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[key] = value
    return AgentConfig.model_validate(data, context={"config_dir": tmp_path})


def test_limits_over_the_wire_limit_are_refused(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ValidationError, match="less than or equal to 4194304"):
        _config(tmp_path, pki, sources__0__max_line_bytes=16 * limits.MIB)
    with pytest.raises(ValidationError, match="less than or equal to 8388608"):
        _config(tmp_path, pki, batch__max_bytes=9 * limits.MIB)
    with pytest.raises(ValidationError, match="less than or equal to 10000"):
        _config(tmp_path, pki, batch__max_events=100_000)
    _config(tmp_path, pki, sources__0__max_line_bytes=limits.MAX_LINE_BYTES)


def test_a_tls_key_readable_by_group_or_others_is_refused(tmp_path: Path, pki: Pki) -> None:
    for mode in (0o644, 0o640, 0o604):
        pki.client_key.chmod(mode)
        with pytest.raises(ValidationError, match=f"mode {mode:04o}.*chmod 600"):
            make_config(tmp_path, pki, 1)
    pki.client_key.chmod(0o600)
    make_config(tmp_path, pki, 1)


class SmallCollector(FakeCollector):
    """Accepts at most `cap` events per batch; refuses larger ones the way the real
    collector does (REJECTED, 'batch too large' detail, stream ended)."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap
        self.refused: list[list[int]] = []

    def Ship(self, request_iterator: Iterator[pb.Batch], context: Any) -> Iterator[pb.Ack]:
        for batch in request_iterator:
            with self.cond:
                if len(events(batch)) > self.cap:
                    self.refused.append([e.sequence for e in events(batch)])
                    self.cond.notify_all()
                    refusal = pb.Ack(
                        batch_id=batch.batch_id,
                        status=pb.Ack.STATUS_REJECTED,
                        detail=f"{limits.BATCH_TOO_LARGE}: {len(events(batch))} events",
                    )
                    yield refusal
                    return
                copy = pb.Batch()
                copy.CopyFrom(batch)
                self.received.append(copy)
                self.cond.notify_all()
            yield pb.Ack(batch_id=batch.batch_id, status=pb.Ack.STATUS_OK)


def test_a_batch_refused_as_too_large_is_split_sealed_and_delivered(
    tmp_path: Path, pki: Pki
) -> None:
    collector = SmallCollector(cap=3)
    with Server(collector, pki) as server:
        config = make_config(tmp_path, pki, server.port, max_events=20, max_wait_s=1.0)
        write_lines(tmp_path / "logs" / "a.jsonl", 40)
        with running(config) as agent:
            collector.wait_for(lambda: sum(len(events(b)) for b in collector.received) >= 40)
            wait_for(lambda: agent.store.load().next_sequence == 41, "the checkpoint", timeout=30)
    delivered = [e.sequence for b in collector.received for e in events(b)]
    assert sorted(set(delivered)) == list(range(1, 41))
    assert all(len(events(b)) <= 3 for b in collector.received)
    assert collector.refused, "nothing was refused: the test did not exercise splitting"
    [public] = integrity.load_public_keys((tmp_path / "state" / "signing-key.pub").read_bytes())
    keys = {integrity.key_id(public): public}
    for batch in collector.received:
        verdict = integrity.verify_batch(batch, batch.agent_id, keys)
        assert verdict.authentic, verdict.findings
    lines = [json.loads(e.original)["n"] for b in collector.received for e in events(b)]
    assert sorted(set(lines)) == list(range(40))


def test_a_batch_over_the_collectors_message_limit_is_split(tmp_path: Path, pki: Pki) -> None:
    """A collector whose gRPC limit is below the agent's batches (an older or
    misconfigured one): grpc refuses the message with RESOURCE_EXHAUSTED, the agent
    splits the batch instead of resending it unchanged forever."""
    collector = FakeCollector()
    with Server(collector, pki, max_message_bytes=16 * 1024) as server:
        config = make_config(tmp_path, pki, server.port, max_events=100, max_wait_s=1.0)
        path = tmp_path / "logs" / "a.jsonl"
        path.parent.mkdir(parents=True)
        with path.open("w") as out:
            for n in range(60):
                out.write(json.dumps({"timestamp": 1772356500, "n": n, "pad": "p" * 500}) + "\n")
        with running(config) as agent:
            collector.wait_for(lambda: sum(len(events(b)) for b in collector.received) >= 60)
            wait_for(lambda: agent.store.load().next_sequence == 61, "the checkpoint", timeout=30)
    assert sorted({e.sequence for b in collector.received for e in events(b)}) == list(range(1, 61))
    assert all(b.ByteSize() <= 16 * 1024 for b in collector.received)
