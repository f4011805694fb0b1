from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agent.checkpoint import Checkpoint, CheckpointStore, FileOffset
from agent.errors import CheckpointError
from agent.runtime import Watermark
from agent.ship import Outgoing
from agent.spool import Entry, Spool
from agent.statedisk import StateDisk
from proto.v1 import audit_pb2 as pb

STREAM = "0123456789abcdef"


def test_missing_checkpoint_is_fresh(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "state")
    store.prepare()
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert store.load() == Checkpoint(next_sequence=1, files={})


def test_roundtrip_and_format(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    files = {"2049:77": FileOffset("/var/log/crm/audit.jsonl", 1234, "10:ab")}
    cp = Checkpoint(42, files, "0123456789abcdef", bytes(range(32)))
    store.save(cp)
    assert store.load() == cp
    assert json.loads(store.path.read_text()) == {
        "version": 3,
        "stream_id": "0123456789abcdef",
        "next_sequence": 42,
        "head": bytes(range(32)).hex(),
        "files": {
            "2049:77": {"path": "/var/log/crm/audit.jsonl", "offset": 1234, "fingerprint": "10:ab"}
        },
    }

    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]  # no temp file left


def test_save_replaces_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CheckpointStore(tmp_path)
    store.save(Checkpoint(5, {}, STREAM))

    def crash(*_args: object) -> None:
        raise OSError("disk full")

    # A failure before the rename leaves the previous checkpoint whole.
    monkeypatch.setattr(Path, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.save(Checkpoint(9, {}, STREAM))
    monkeypatch.undo()
    assert store.load().next_sequence == 5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"version": 4, "next_sequence": 1, "files": {}}', "unsupported version 4"),
        ('{"version": 3, "next_sequence": 1, "files": {}, "head": ""}', "stream_id"),
        (
            '{"version": 3, "stream_id": "0123456789abcdef", "next_sequence": 1, '
            '"files": {}, "head": "abcd"}',
            "head",
        ),
        ('{"version": 1, "next_sequence": 0, "files": {}}', "next_sequence"),
        ('{"version": 1, "next_sequence": 1, "files": {"1:2": {"path": "x"}}}', "files"),
        ("{not json", "invalid checkpoint"),
        ("[]", "not a JSON object"),
    ],
)
def test_unusable_checkpoint_is_an_error(tmp_path: Path, content: str, message: str) -> None:
    store = CheckpointStore(tmp_path)
    store.path.write_text(content)
    with pytest.raises(CheckpointError, match=message):
        store.load()


def test_version_1_is_still_read(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.path.write_text(
        '{"version": 1, "next_sequence": 5, "files": {"1:2": {"path": "/x", "offset": 3}}}'
    )
    assert store.load() == Checkpoint(5, {"1:2": FileOffset("/x", 3, "")})


def test_version_2_is_read_as_a_checkpoint_without_a_stream(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.path.write_text(
        '{"version": 2, "next_sequence": 9, "files": {"1:2": '
        '{"path": "/x", "offset": 3, "fingerprint": "3:ab"}}}'
    )
    loaded = store.load()
    assert (loaded.stream_id, loaded.head, loaded.next_sequence) == ("", b"", 9)


def _acked_batch(last: int, offset: int) -> Outgoing:
    seal = pb.Seal(first_sequence=last - 1, last_sequence=last, chain_head=bytes([last]) * 32)
    return Outgoing(
        agent_id="a",
        seal=seal,
        event_bytes=(b"e1", b"e2"),
        positions={"1:2": FileOffset("/var/log/a.log", offset, "")},
    )


def test_acks_within_the_save_interval_are_saved_by_flush_and_segments_wait(
    tmp_path: Path,
) -> None:
    """The watermark saves at most once per interval; an ack in between is held in
    memory until `flush`, and the spool deletes only what a save covers."""
    now = [100.0]
    store = CheckpointStore(tmp_path)
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, segment_bytes=1)
    spool.open(0, stream_id="0123456789abcdef")
    spool.append([Entry(pb.AuditEvent()), Entry(pb.AuditEvent())])  # segment 1 (rolled)
    spool.append([Entry(pb.AuditEvent()), Entry(pb.AuditEvent())])  # segment 3 (rolled)
    start = Checkpoint(1, {}, "0123456789abcdef", b"")
    watermark = Watermark(
        store, start, spool, StateDisk(tmp_path), monotonic=lambda: now[0], save_interval_s=1.0
    )
    watermark.delivered(_acked_batch(2, 10))  # the first ack is saved at once
    assert store.load().next_sequence == 3
    assert spool.segment_names()[0] == "00000000000000000003.seg"
    now[0] += 0.5
    watermark.delivered(_acked_batch(4, 20))  # within the interval: in memory only
    assert watermark.acked_sequence == 4
    assert store.load().next_sequence == 3
    assert spool.segment_names()[0] == "00000000000000000003.seg"
    watermark.flush()
    saved = store.load()
    assert saved.next_sequence == 5 and saved.head == bytes([4]) * 32
    assert saved.files["1:2"].offset == 20
    assert spool.segment_names()[0] == "00000000000000000005.seg"
    now[0] += 1.0
    watermark.delivered(_acked_batch(6, 30))  # the interval has passed: saved at once
    assert store.load().next_sequence == 7
    spool.close()
