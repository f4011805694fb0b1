"""`crm-audit verify`, format 1 history: an anchor's head decides as in format 2
(`collector.verify.vouch`). A signed checkpoint that disagrees with the signed chain makes
the sequence ALTERED; the unsigned chain head record disagreeing is CHAIN_HEAD_ALTERED,
naming its index, and the intact event it names stays VALID. Events after the last seal
that chain into a head a signed checkpoint attests are SEAL_MISSING, not INSERTED; the
chain head record vouches for none. Served by the in-memory OpenSearch of
`tests.collector.test_verify_chain_links`; through the real pipeline:
tests/integration/test_tamper.py."""

from __future__ import annotations

import base64
from pathlib import Path

from collector.checkpoints import CheckpointView
from collector.gate import chainheads_index, seals_index
from collector.verify import (
    ALTERED,
    INSERTED,
    SEAL_MISSING,
    TAIL_TRUNCATED,
    VALID,
    AgentReport,
    Verifier,
)
from collector.verify.anchors import CHAIN_HEAD_ALTERED
from proto import integrity
from proto.v1 import audit_pb2 as pb
from tests.collector.test_verify_chain_links import AGENT, PREFIX, FakeOpenSearch, Trail

HEADS = chainheads_index(PREFIX)


def head_at(trail: Trail, seq: int) -> str:
    """The chain hash the collector stored with event `seq` (its head there)."""
    for docs in trail.store.indices.values():
        source = docs.get(f"{AGENT}:{seq}")
        if source is not None:
            return str(source["integrity"]["chain_hash"])
    raise AssertionError(f"no event {seq}")


def record(trail: Trail, seq: int, head: str) -> None:
    trail.store.put(
        HEADS, AGENT, {"agent": {"id": AGENT}, "chain": {"sequence": seq, "head": head}}
    )


def verify(trail: Trail, checkpoint: tuple[int, str] | None = None) -> AgentReport:
    view = None
    if checkpoint is not None:
        view = CheckpointView(heads={AGENT: (checkpoint[0], checkpoint[1], "T")})
    report = Verifier(trail.store, PREFIX, trail.keys, checkpoints=view).run([AGENT])
    return report.agents[AGENT]


def kinds(out: AgentReport) -> list[tuple[str, int, int]]:
    return [(r.kind, r.first, r.last) for r in out.ranges]


def drop_seal(trail: Trail, first: int) -> None:
    """Delete the seal whose range starts at `first` (its events stay)."""
    seals = trail.store.indices[seals_index(PREFIX)]
    (doc_id,) = [d for d, src in seals.items() if src["seal"]["first_sequence"] == first]
    del seals[doc_id]


def make_trail(tmp_path: Path, *sizes: int) -> Trail:
    trail = Trail(FakeOpenSearch(), tmp_path / "state")
    trail.ship(*sizes)
    return trail


def test_an_edited_chain_head_record_is_the_finding_not_the_event(tmp_path: Path) -> None:
    trail = make_trail(tmp_path, 10, 10)
    forged = "ab" * 32
    record(trail, 10, forged)
    out = verify(trail)
    assert kinds(out) == [(VALID, 1, 20)]
    ((kind, detail),) = out.stream
    assert kind == CHAIN_HEAD_ALTERED
    assert f"in {HEADS} says head {forged[:16]} at sequence 10" in detail
    assert not out.valid


def test_a_signed_checkpoint_that_disagrees_is_altered_there(tmp_path: Path) -> None:
    trail = make_trail(tmp_path, 10, 10)
    out = verify(trail, checkpoint=(15, "00" * 32))
    assert kinds(out) == [(VALID, 1, 14), (ALTERED, 15, 15), (VALID, 16, 20)]
    assert "signed checkpoint of T" in out.ranges[1].detail
    assert out.stream == []


def test_agreeing_anchors_are_silent_within_and_at_the_end_of_a_seal(tmp_path: Path) -> None:
    trail = make_trail(tmp_path, 10, 10)
    record(trail, 20, head_at(trail, 20))
    out = verify(trail, checkpoint=(13, head_at(trail, 13)))
    assert kinds(out) == [(VALID, 1, 20)]
    assert out.stream == []


def test_genuine_events_whose_last_seal_was_deleted_are_seal_missing(tmp_path: Path) -> None:
    trail = make_trail(tmp_path, 10, 10)
    drop_seal(trail, 11)
    out = verify(trail, checkpoint=(20, head_at(trail, 20)))
    assert kinds(out) == [(VALID, 1, 10), (SEAL_MISSING, 11, 20)]
    assert "signed checkpoint of T" in out.ranges[1].detail
    # a checkpoint vouching for 11-15 only: the rest is not proven genuine
    out = verify(trail, checkpoint=(15, head_at(trail, 15)))
    assert kinds(out) == [(VALID, 1, 10), (SEAL_MISSING, 11, 15), (INSERTED, 16, 20)]


def test_the_chain_head_record_vouches_for_no_unsealed_event(tmp_path: Path) -> None:
    trail = make_trail(tmp_path, 10, 10)
    drop_seal(trail, 11)
    record(trail, 20, head_at(trail, 20))
    assert kinds(verify(trail)) == [(VALID, 1, 10), (INSERTED, 11, 20)]
    # nor does a signed head the unsealed events do not chain into
    assert kinds(verify(trail, checkpoint=(20, "00" * 32))) == [(VALID, 1, 10), (INSERTED, 11, 20)]


def test_a_vouched_event_whose_fields_were_edited_is_altered(tmp_path: Path) -> None:
    trail = make_trail(tmp_path, 10, 10)
    drop_seal(trail, 11)
    for docs in trail.store.indices.values():
        if f"{AGENT}:12" in docs:
            docs[f"{AGENT}:12"]["user"]["name"] = "mallory"
    out = verify(trail, checkpoint=(20, head_at(trail, 20)))
    assert kinds(out) == [
        (VALID, 1, 10),
        (SEAL_MISSING, 11, 11),
        (ALTERED, 12, 12),
        (SEAL_MISSING, 13, 20),
    ]


def test_an_anchor_beyond_the_documents_still_finds_the_truncated_tail(tmp_path: Path) -> None:
    trail = make_trail(tmp_path, 10)
    record(trail, 25, "cd" * 32)
    out = verify(trail)
    assert kinds(out) == [(VALID, 1, 10), (TAIL_TRUNCATED, 11, 25)]
    assert out.ranges[1].indices == (HEADS,)


def test_a_record_is_not_judged_by_a_head_the_seal_does_not_prove(tmp_path: Path) -> None:
    """Event 2 re-encoded and the stored chain hashes of 2-4 recomputed: the chain over
    the stored bytes breaks at 5, so its heads at 2-4 are not the signed ones and the
    genuine chain head record at 3 is not blamed (the events are the findings)."""
    trail = make_trail(tmp_path, 10)
    record(trail, 3, head_at(trail, 3))
    docs = {d: src for index in trail.store.indices.values() for d, src in index.items()}
    head = bytes.fromhex(head_at(trail, 1))
    for seq in (2, 3, 4):
        stored = docs[f"{AGENT}:{seq}"]
        data = base64.b64decode(stored["integrity"]["canonical"])
        if seq == 2:
            event = pb.AuditEvent.FromString(data)
            event.user.name = "mallory"
            data = integrity.canonical_event_bytes(event)
            stored["integrity"]["canonical"] = base64.b64encode(data).decode()
            stored["user"]["name"] = "mallory"
        head = integrity.chain_link(head, data)
        stored["integrity"]["chain_hash"] = head.hex()
    out = verify(trail)
    # (Which event format 1 blames here follows the stored chain hashes: its seals sign
    # heads only, not per-event hashes; format 2 names event 2.)
    assert not out.valid
    assert out.stream == []
