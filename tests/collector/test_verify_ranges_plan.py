"""Where a format 2 stream is cut into ranges for verify's worker processes
(`collector.verify.ranges.plan`): at data seals' first sequences, ~equal events per
range, each starting from the signed head before its cut; a stream whose seals are not
clean and contiguous is walked whole (None); heartbeat seals are compared over all
seals, as one walk compares them. (Reports with and without ranges compared against a
real OpenSearch: tests/integration/test_verify_ranges.py.)"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.sealing import AgentKey, heartbeat_seal
from collector.verify.anchors import Attested
from collector.verify.ranges import Plan, plan
from collector.verify.reading import SealInfo
from collector.verify.report import AgentReport
from collector.verify.signed import StreamWalk
from collector.verify.verdicts import CHAIN_BREAK
from collector.verify.verifier import Verifier
from proto import integrity
from proto.v1 import audit_pb2 as pb
from tests.integration import v2_store

AGENT = "crm-ranges"
STREAM = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
KEY = Ed25519PrivateKey.generate()
BUILT = v2_store.build_stream(AGENT, STREAM, KEY, 1000, batch=50, start_time=10**18)


def skeleton() -> StreamWalk:
    def unused(*_: Any, **__: Any) -> Any:
        raise AssertionError("no OpenSearch request expected")

    verifier = Verifier(unused, "p", lambda _: {})
    return StreamWalk(verifier, AGENT, STREAM, AgentReport(AGENT, stream_id=STREAM))


def infos(seals: list[pb.Seal]) -> list[SealInfo]:
    return [SealInfo(s, (), "", "p-seals", signed_ok=True) for s in seals]


def test_cuts_at_seal_boundaries_from_the_signed_head_before() -> None:
    plan = _plan(infos(BUILT.seals), pieces=4)
    assert plan is not None and plan.seals == 20 and plan.breaks == []
    firsts = [p.first for p in plan.pieces]
    assert firsts == [1, 251, 501, 751]
    assert [p.stop for p in plan.pieces] == [250, 500, 750, None]
    assert plan.pieces[0].head == integrity.genesis_v2(AGENT, STREAM)
    for piece in plan.pieces[1:]:
        assert piece.head == BUILT.heads[piece.first - 2]
    assert sum(len(p.spans) for p in plan.pieces) == 20


def test_too_few_events_or_seals_not_clean_and_contiguous_walk_whole() -> None:
    assert _plan(infos(BUILT.seals), pieces=4, min_events=600) is None
    gone = infos(BUILT.seals[:5] + BUILT.seals[6:])
    assert _plan(gone, pieces=4) is None
    edited = infos(BUILT.seals)
    edited[7] = SealInfo(BUILT.seals[7], (), "searchable fields differ", "p-seals", True)
    assert _plan(edited, pieces=4) is None
    twice = infos(BUILT.seals[:8] + BUILT.seals[7:])
    assert _plan(twice, pieces=4) is None


def test_heartbeats_are_compared_over_all_seals() -> None:
    key = AgentKey(KEY, integrity.key_id(KEY.public_key()))
    wrong = heartbeat_seal(
        key, agent_id=AGENT, stream_id=STREAM, sequence=300, head=BUILT.heads[10],
        now_unix_nano=1,
    )  # fmt: skip
    right = heartbeat_seal(
        key, agent_id=AGENT, stream_id=STREAM, sequence=900, head=BUILT.heads[899],
        now_unix_nano=2,
    )  # fmt: skip
    seals = sorted([*BUILT.seals, wrong, right], key=lambda s: (s.first_sequence, s.last_sequence))
    plan = _plan(infos(seals), pieces=4)
    assert plan is not None and plan.seals == 22
    assert [(b.kind, b.first, b.last) for b in plan.breaks] == [(CHAIN_BREAK, 300, 300)]
    assert plan.pieces[-1].heartbeat == (900, BUILT.heads[899])


def _plan(seals: list[SealInfo], *, pieces: int, min_events: int = 100) -> Plan | None:
    return plan(skeleton(), seals, Attested(), pieces=pieces, min_events=min_events)
