"""collector.gate continuity rules, collector.keys and collector.checkpoints."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.checkpoints import CheckpointFile, load_or_create_key, read_checkpoints
from collector.errors import RetryableIndexingError
from collector.gate import FORK, GAP, UNKNOWN_START, ChainHead, IntegrityGate, continuity
from collector.index import BulkIndexer, Response
from collector.keys import KeyRegistrationError, KeyRing, register_key
from proto import integrity
from proto.v1 import audit_pb2 as pb
from tests.collector.conftest import FakeHttp

AGENT = "agent-1"


def chain(n: int) -> list[bytes]:
    """hashes[i] = chain hash of sequence i (hashes[0] = genesis)."""
    out = [integrity.genesis(AGENT)]
    for seq in range(1, n + 1):
        out.append(integrity.chain_link(out[-1], f"event {seq}".encode()))
    return out


H = chain(30)


def seal(first: int, last: int) -> tuple[pb.Seal, list[bytes]]:
    return (
        pb.Seal(
            agent_id=AGENT,
            first_sequence=first,
            last_sequence=last,
            prev_chain_head=H[first - 1],
            chain_head=H[last],
            event_count=last - first + 1,
        ),
        H[first : last + 1],
    )


def head(seq: int, value: bytes | None = None) -> ChainHead:
    return ChainHead(seq, value if value is not None else H[seq], 1, 1)


def kinds(result: tuple[list[integrity.Finding], object, bool]) -> list[tuple[str, int, int]]:
    return [(f.kind, f.first, f.last) for f in result[0]]


def test_first_batch_from_genesis_and_continuation() -> None:
    s, hashes = seal(1, 10)
    assert continuity(AGENT, s, hashes, None) == ([], (10, H[10]), False)
    s, hashes = seal(11, 20)
    assert continuity(AGENT, s, hashes, head(10)) == ([], (20, H[20]), False)


def test_gap_fork_and_unknown_start() -> None:
    s, hashes = seal(15, 20)
    assert kinds(continuity(AGENT, s, hashes, head(10))) == [(GAP, 11, 14)]
    s, hashes = seal(11, 20)
    assert kinds(continuity(AGENT, s, hashes, head(10, b"\1" * 32))) == [(FORK, 11, 20)]
    assert kinds(continuity(AGENT, s, hashes, None)) == [(UNKNOWN_START, 11, 20)]


def test_overlap_and_redelivery() -> None:
    s, hashes = seal(5, 20)  # a re-cut batch overlapping the stored head
    assert continuity(AGENT, s, hashes, head(10)) == ([], (20, H[20]), False)
    assert kinds(continuity(AGENT, s, hashes, head(10, b"\2" * 32))) == [(FORK, 10, 20)]
    s, hashes = seal(1, 10)  # older than the stored head: look at stored events
    assert continuity(AGENT, s, hashes, head(20)) == ([], None, True)


def test_heartbeat() -> None:
    hb = pb.Seal(agent_id=AGENT, first_sequence=10, last_sequence=10, event_count=0)
    hb.prev_chain_head = hb.chain_head = H[10]
    assert continuity(AGENT, hb, [], head(10)) == ([], (10, H[10]), False)
    assert kinds(continuity(AGENT, hb, [], head(10, b"\3" * 32))) == [(FORK, 10, 10)]


def test_register_key_appends_and_keyring_rereads(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path)
    assert ring.keys_for(AGENT) == {}
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    kid1, added = register_key(tmp_path, AGENT, integrity.public_key_pem(k1.public_key()))
    assert added and set(ring.keys_for(AGENT)) == {kid1}
    assert register_key(tmp_path, AGENT, integrity.public_key_pem(k1.public_key()))[1] is False
    kid2, _ = register_key(tmp_path, AGENT, integrity.public_key_pem(k2.public_key()))
    assert set(KeyRing(tmp_path).keys_for(AGENT)) == {kid1, kid2}
    with pytest.raises(KeyRegistrationError):
        register_key(tmp_path, "../evil", integrity.public_key_pem(k1.public_key()))
    with pytest.raises(KeyRegistrationError):
        register_key(tmp_path, AGENT, b"not a key")


def test_checkpoints_are_signed_and_linked(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "ck" / "collector.pem")
    assert stat.S_IMODE((tmp_path / "ck" / "collector.pem").stat().st_mode) == 0o600
    file = CheckpointFile(tmp_path / "ck", key)
    assert file.append({AGENT: (10, H[10])}, now_unix_nano=1)
    assert not file.append({AGENT: (10, H[10])}, now_unix_nano=2)  # unchanged
    assert file.append({AGENT: (20, H[20]), "agent-2": (None, H[0])}, now_unix_nano=3)
    view = read_checkpoints(tmp_path / "ck")
    assert view.problems == [] and view.lines == 2
    assert view.heads[AGENT][:2] == (20, H[20].hex())

    lines = file.path.read_text().splitlines()
    forged = json.loads(lines[1])
    forged["agents"][AGENT]["sequence"] = 30
    file.path.write_text(lines[0] + "\n" + json.dumps(forged) + "\n")
    assert any("signature" in p for p in read_checkpoints(tmp_path / "ck").problems)
    file.path.write_text(lines[1] + "\n")  # the first line dropped
    assert any("previous line" in p for p in read_checkpoints(tmp_path / "ck").problems)


@pytest.mark.parametrize("status", [0, 403, 503])
def test_a_redelivery_that_cannot_be_compared_is_retried_not_passed(status: int) -> None:
    gate = IntegrityGate(
        FakeHttp(lambda m, p, b, q: Response(status, {})),
        cast(BulkIndexer, None),
        cast(KeyRing, None),
        prefix="p",
    )
    seal = pb.Seal(agent_id="a", first_sequence=1, last_sequence=2)
    with pytest.raises(RetryableIndexingError, match=f"re-delivered range of a.*HTTP {status}"):
        gate._check_redelivery(seal, [b"h" * 32], ("p-events-x", "a:2"))


def test_a_redelivery_whose_events_are_gone_has_nothing_to_compare() -> None:
    gate = IntegrityGate(
        FakeHttp(lambda m, p, b, q: Response(404, {})),
        cast(BulkIndexer, None),
        cast(KeyRing, None),
        prefix="p",
    )
    seal = pb.Seal(agent_id="a", first_sequence=1, last_sequence=2)
    assert gate._check_redelivery(seal, [b"h" * 32], ("p-events-x", "a:2")) == []
