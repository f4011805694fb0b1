"""Stream identity and receipts: stream.json made once with the state, a new stream
after state loss, a format 1 state taken over (or refused while its spool holds unacked
events), the collector's receipts kept bounded and exported (real gRPC over mTLS)."""

from __future__ import annotations

import base64
import json
import shutil
import stat
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import stream
from agent.checkpoint import Checkpoint, CheckpointStore, FileOffset
from agent.receipts import ReceiptStore
from agent.runtime import Agent, Clock
from agent.tail.reader import file_key
from proto import integrity
from proto.continuation import STREAM_CONTINUED
from proto.v1 import audit_pb2 as pb
from tests.agent.certs import Pki, make_pki
from tests.agent.fake_collector import FakeCollector, Server, events
from tests.agent.test_ship import AGENT_ID, all_sequences, make_config, running, write_lines
from tests.processes import wait_for

CLI = Path(sys.executable).parent / "crm-audit-agent"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki", AGENT_ID)


def test_stream_file_is_made_once_private_and_never_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    made = stream.load_or_create(state, now_unix_nano=1)
    assert made.created and integrity.valid_stream_id(made.stream_id)
    assert stat.S_IMODE((state / stream.FILE_NAME).stat().st_mode) == 0o600
    again = stream.load_or_create(state, now_unix_nano=2)
    assert (again.stream_id, again.created) == (made.stream_id, False)
    shutil.rmtree(state)  # state lost: a new incarnation
    assert stream.load_or_create(state, now_unix_nano=3).stream_id != made.stream_id
    (state / stream.FILE_NAME).write_text('{"version": 1, "stream_id": "XYZ"}')
    with pytest.raises(stream.StreamError, match="stream_id"):
        stream.read(state)


def test_an_agent_without_its_state_starts_a_new_stream_at_sequence_1(
    tmp_path: Path, pki: Pki
) -> None:
    collector = FakeCollector()
    with Server(collector, pki) as server:
        config = make_config(tmp_path, pki, server.port)
        write_lines(tmp_path / "logs" / "a.jsonl", 3)
        with running(config) as agent:
            collector.wait_for(lambda: len(all_sequences(collector)) >= 3)
            first_stream = agent.stream_id
        shutil.rmtree(config.state_dir)
        write_lines(tmp_path / "logs" / "b.jsonl", 2)
        with running(config) as agent:
            # Everything is read again (no positions) under the new stream.
            collector.wait_for(lambda: len(all_sequences(collector)) >= 8)
            second_stream = agent.stream_id
    assert first_stream != second_stream
    shipped = [(e.stream_id, e.sequence) for b in collector.received for e in events(b)]
    assert shipped[:3] == [(first_stream, 1), (first_stream, 2), (first_stream, 3)]
    assert [s for s, _ in shipped[3:]] == [second_stream] * 5
    assert [n for _, n in shipped[3:]] == [1, 2, 3, 4, 5]
    seals = [b.seal for b in collector.received if events(b)]
    assert seals[-1].stream_id == second_stream
    checkpoint = CheckpointStore(config.state_dir).load()
    assert checkpoint.stream_id == second_stream and checkpoint.next_sequence == 6
    assert checkpoint.head == seals[-1].chain_head


def legacy_segment(path: Path, sequences: range) -> None:
    out = bytearray()
    for sequence in sequences:
        payload = b"format 1 record %d" % sequence
        crc = zlib.crc32(payload, zlib.crc32(struct.pack(">Q", sequence)))
        out += struct.pack(">4sIIQ", b"CRS1", len(payload), crc, sequence) + payload
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(out))


def format1_state(tmp_path: Path, config_state: Path, acked: int) -> Path:
    """A state directory as stream format 1 left it: 5 lines read, records 1..5 spooled."""
    log_file = tmp_path / "logs" / "a.jsonl"
    write_lines(log_file, 5)
    size = log_file.stat().st_size
    key = file_key(log_file.stat())
    files = {key: FileOffset(str(log_file), size, "")}
    config_state.mkdir(mode=0o700, parents=True)
    CheckpointStore(config_state).save(Checkpoint(acked + 1, files))
    data = json.loads((config_state / "checkpoint.json").read_text())
    data["version"] = 2
    del data["stream_id"], data["head"]
    (config_state / "checkpoint.json").write_text(json.dumps(data))
    (config_state / "chain.json").write_text('{"version": 1}')
    segment = config_state / "spool" / "00000000000000000001.seg"
    legacy_segment(segment, range(1, 6))
    return segment


def test_a_format_1_state_is_taken_over_when_its_spool_is_acked(tmp_path: Path, pki: Pki) -> None:
    collector = FakeCollector()
    with Server(collector, pki) as server:
        config = make_config(tmp_path, pki, server.port)
        format1_state(tmp_path, config.state_dir, acked=5)
        write_lines(tmp_path / "logs" / "a.jsonl", 2, start=5)
        with running(config) as agent:
            collector.wait_for(lambda: len(all_sequences(collector)) >= 3)
    shipped = [e for b in collector.received for e in events(b)]
    # Sequence 1 states the continuation; file positions kept (the 5 acked lines are
    # not read again), a new stream from 1.
    continued = shipped[0]
    assert continued.action == STREAM_CONTINUED
    assert dict(continued.attributes) == {"previous_format": "1", "previous_sequence": "5"}
    assert [json.loads(e.original)["n"] for e in shipped[1:]] == [5, 6]
    assert [e.sequence for e in shipped] == [1, 2, 3]
    assert {e.stream_id for e in shipped} == {agent.stream_id}
    assert not (config.state_dir / "chain.json").exists()
    assert (
        not (config.state_dir / "spool" / "00000000000000000001.seg")
        .read_bytes()
        .startswith(b"CRS1")
    )


def legacy_chain(state: Path, sequence: int, head: bytes) -> None:
    (state / "chain.json").write_text(
        json.dumps(
            {"version": 1, "agent_id": AGENT_ID, "head_sequence": sequence, "head": head.hex()}
        )
    )


def test_the_continuation_states_the_legacy_head_only_at_the_acked_sequence(
    tmp_path: Path, pki: Pki
) -> None:
    config = make_config(tmp_path, pki, 1)
    format1_state(tmp_path, config.state_dir, acked=5)
    agent = Agent(config, clock=Clock(time.time_ns, time.monotonic), hostname="h", version="t")
    legacy_chain(config.state_dir, 5, b"\x07" * 32)
    assert agent._legacy_head(5) == b"\x07" * 32
    assert agent._legacy_head(4) is None  # the head of another sequence is not stated
    (config.state_dir / "chain.json").unlink()
    assert agent._legacy_head(5) is None


def test_the_continuation_is_spooled_once_when_the_takeover_is_cut_short(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the event was spooled but before the format 2 checkpoint was
    written: the next start takes the format 1 state over again, with the same stream,
    and finds the event already spooled."""
    collector = FakeCollector()
    with Server(collector, pki) as server:
        config = make_config(tmp_path, pki, server.port)
        format1_state(tmp_path, config.state_dir, acked=5)
        legacy_chain(config.state_dir, 5, b"\x07" * 32)
        first = Agent(config, clock=Clock(time.time_ns, time.monotonic), hostname="h", version="t")
        acked, takeover = first._take_stream(first.store.load(), True)
        assert takeover is not None
        recovery = first.spool.open(0, stream_id=acked.stream_id)

        def crash(_: Checkpoint) -> None:
            raise OSError(28, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(first.store, "save", crash)
            recovery = first._finish_takeover(takeover, recovery)
        first.spool.close()
        assert recovery.next_sequence == 2
        assert (config.state_dir / "chain.json").exists()  # the format 1 state is intact
        assert CheckpointStore(config.state_dir).load().stream_id == ""
        write_lines(tmp_path / "logs" / "a.jsonl", 1, start=5)
        with running(config) as agent:
            collector.wait_for(lambda: len(all_sequences(collector)) >= 2)
    assert agent.stream_id == acked.stream_id
    shipped = [e for b in collector.received for e in events(b)]
    assert [(e.sequence, e.action) for e in shipped][:1] == [(1, STREAM_CONTINUED)]
    assert [e.action for e in shipped].count(STREAM_CONTINUED) == 1
    assert [json.loads(e.original)["n"] for e in shipped[1:]] == [5]
    assert dict(shipped[0].attributes)["previous_head"] == "07" * 32
    assert shipped[0].observer.agent_id == AGENT_ID
    assert not (config.state_dir / "chain.json").exists()
    assert CheckpointStore(config.state_dir).load().stream_id == acked.stream_id


def cli_config(tmp_path: Path, pki: Pki, state_dir: Path) -> Path:
    """A config for the CLI with this state (its collector is never reached)."""
    cfg = tmp_path / "cli-agent.yaml"
    tls = {"ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}
    cfg.write_text(
        json.dumps(
            {
                "agent_id": AGENT_ID,
                "state_dir": str(state_dir),
                "collector": {"endpoint": "127.0.0.1:1", "tls": tls},
                "sources": [{"name": "a", "format": "jsonlines", "paths": ["/nonexistent/*"]}],
            }
        )
    )
    return cfg


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=60)


def test_a_format_1_spool_with_unacked_events_is_refused_with_one_line(
    tmp_path: Path, pki: Pki
) -> None:
    config = make_config(tmp_path, pki, 1)
    segment = format1_state(tmp_path, config.state_dir, acked=3)
    result = cli("run", "-c", str(cli_config(tmp_path, pki, config.state_dir)))
    assert result.returncode == 1
    (line,) = [x for x in result.stderr.splitlines() if "CRITICAL" in x or "CRS1" in x]
    assert str(segment) in line and "up to sequence 5" in line and "crm-audit-agent status" in line
    assert "Traceback" not in result.stderr
    assert segment.read_bytes().startswith(b"CRS1")  # nothing dropped
    assert not (config.state_dir / stream.FILE_NAME).exists()  # no stream started


def test_a_checkpoint_whose_stream_file_is_gone_is_refused(tmp_path: Path, pki: Pki) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    CheckpointStore(state).save(Checkpoint(4, {}, "0123456789abcdef", bytes(32)))
    result = cli("run", "-c", str(cli_config(tmp_path, pki, state)))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "stream.json is missing" in result.stderr and "0123456789abcdef" in result.stderr


class ReceiptCollector(FakeCollector):
    """Acks OK with a receipt signed by a collector key over the batch's sealed head."""

    def __init__(self) -> None:
        super().__init__()
        self.key = Ed25519PrivateKey.generate()

    def Ship(self, request_iterator: Iterator[pb.Batch], context: Any) -> Iterator[pb.Ack]:
        for batch in request_iterator:
            with self.cond:
                copy = pb.Batch()
                copy.CopyFrom(batch)
                self.received.append(copy)
                self.cond.notify_all()
            ack = pb.Ack(batch_id=batch.batch_id, status=pb.Ack.STATUS_OK)
            if batch.event_bytes:
                ack.receipt.CopyFrom(
                    pb.Receipt(
                        agent_id=batch.agent_id,
                        stream_id=batch.seal.stream_id,
                        last_sequence=batch.seal.last_sequence,
                        head=batch.seal.chain_head,
                        received_unix_nano=batch.seal.time_unix_nano,
                    )
                )
                integrity.sign_receipt(ack.receipt, self.key)
            yield ack


def test_receipts_are_kept_and_exported_for_verify(tmp_path: Path, pki: Pki) -> None:
    collector = ReceiptCollector()
    with Server(collector, pki) as server:
        config = make_config(tmp_path, pki, server.port)
        write_lines(tmp_path / "logs" / "a.jsonl", 7)  # batches of 3: 1-3, 4-6, 7
        with running(config) as agent:
            collector.wait_for(lambda: len(all_sequences(collector)) >= 7)
            store = agent.receipts
            wait_for(lambda: len(list(store.lines())) >= 3, "three receipts", timeout=30)
    kept = sorted(store.directory.iterdir())
    assert [p.name.split("-")[1] for p in kept] == [f"{n:020d}.json" for n in (3, 6, 7)]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in kept)
    cfg = cli_config(tmp_path, pki, config.state_dir)
    out = tmp_path / "exported"
    result = cli("receipts", "-c", str(cfg), "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = (out / f"{AGENT_ID}.receipts.jsonl").read_text().splitlines()
    keys = {integrity.key_id(collector.key.public_key()): collector.key.public_key()}
    heads = {b.seal.last_sequence: b.seal.chain_head for b in collector.received if events(b)}
    for line in lines:
        row = json.loads(line)
        receipt = pb.Receipt.FromString(base64.b64decode(row["receipt"]))
        assert integrity.receipt_valid(receipt, keys)
        assert receipt.head == heads[row["last_sequence"]] and row["head"] == receipt.head.hex()
        assert (row["agent_id"], row["stream_id"]) == (AGENT_ID, agent.stream_id)
    assert [json.loads(line)["last_sequence"] for line in lines] == [3, 6, 7]
    status = cli("status", "-c", str(cfg))
    assert f"stream: {agent.stream_id}" in status.stdout and "3 collector receipts" in status.stdout


def test_receipts_are_bounded_per_stream(tmp_path: Path) -> None:
    store = ReceiptStore(tmp_path, keep=3)
    for stream_id in ("00000000000000aa", "00000000000000bb"):
        for n in range(1, 6):
            store.add(pb.Receipt(agent_id="a", stream_id=stream_id, last_sequence=n, head=b"h"))
    rows = [json.loads(line) for line in store.lines()]
    assert [(r["stream_id"][-2:], r["last_sequence"]) for r in rows] == [
        ("aa", 3),
        ("aa", 4),
        ("aa", 5),
        ("bb", 3),
        ("bb", 4),
        ("bb", 5),
    ]
    store.add(pb.Receipt(agent_id="a", stream_id="../../etc", last_sequence=9))
    assert len(list(store.lines())) == 6  # an invalid stream id names no file
