"""One format 2 stream verified as sequence ranges in worker processes gives the report
one walk gives: against a real OpenSearch, a stream of 1,000 events (seals of 50) cut
into four ranges at 251, 501 and 751, attacked at and across the cuts (an event
deleted at a cut, a pair swapped across one, an event moved onto its predecessor's
place, a copy in another index, a forged event after the end, a field edited, a
heartbeat seal restating a wrong head at a cut), and a second stream whose deleted
seal makes it walk whole."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opensearchpy import OpenSearch

from agent.sealing import AgentKey, heartbeat_seal
from collector.gate import seals_index
from collector.index import OpenSearchHttp, Requester, make_client
from collector.verify import Verifier
from collector.verify.reading import FastJson
from proto import integrity
from tests.integration import v2_store
from tests.integration.support import drop_prefix

pytestmark = pytest.mark.integration

START = 1_764_000_000 * 10**9  # 2025-11-24
LATER = START + 40 * 86_400 * 10**9  # another month's index


class Stored:
    def __init__(self, url: str, prefix: str, streams: list[v2_store.Stream]) -> None:
        self.url = url
        self.prefix = prefix
        self.streams = streams
        self.keys = {
            s.agent: {integrity.key_id(s.key.public_key()): s.key.public_key()} for s in streams
        }

    def connect(self) -> Requester:
        return OpenSearchHttp(make_client(self.url, timeout_s=60, serializer=FastJson()))

    def verifier(self, workers: int) -> Verifier:
        return Verifier(
            self.connect(),
            self.prefix,
            lambda agent: self.keys.get(agent, {}),
            workers=workers,
            reopen=self.connect if workers > 1 else None,
            range_events=100,
        )


@pytest.fixture(scope="module")
def stored(opensearch_url: str) -> Iterator[Stored]:
    prefix = f"v2ranges-{uuid.uuid4().hex[:8]}"
    client = OpenSearch(hosts=[opensearch_url], timeout=60)
    here, later = v2_store.month_index(prefix, START), v2_store.month_index(prefix, LATER)
    v2_store.create_indices(client, prefix, [here, later])
    cut = v2_store.build_stream(
        "ranges-a", integrity.new_stream_id(), Ed25519PrivateKey.generate(), 1000, batch=50,
        start_time=START,
    )  # fmt: skip
    whole = v2_store.build_stream(
        "ranges-b", integrity.new_stream_id(), Ed25519PrivateKey.generate(), 300, batch=50,
        start_time=START,
    )  # fmt: skip
    for s in (cut, whole):
        v2_store.store(client, prefix, s)
    try:
        _attack(client, prefix, cut, whole)
        yield Stored(opensearch_url, prefix, [cut, whole])
    finally:
        drop_prefix(client, prefix)


def _doc(s: v2_store.Stream, seq: int) -> dict[str, Any]:
    return v2_store.event_doc(s.agent, s.events[seq - 1], s.data[seq - 1], s.heads[seq - 1])


def _attack(client: OpenSearch, prefix: str, s: v2_store.Stream, whole: v2_store.Stream) -> None:
    index = v2_store.month_index(prefix, START)
    later = v2_store.month_index(prefix, LATER)

    def put(seq_id: int, body: dict[str, Any], where: str = index) -> None:
        client.index(index=where, id=f"{s.agent}:{s.stream}:{seq_id}", body=body)

    client.delete(index=index, id=f"{s.agent}:{s.stream}:251")  # first of a range
    swapped = _doc(s, 751)
    put(750, swapped)  # the pair 750/751 swapped across the cut at 751
    put(751, _doc(s, 750))
    moved = _doc(s, 501)
    moved["event"]["sequence"] = 500  # 501's bytes onto 500, the last of a range
    put(500, moved)
    put(252, _doc(s, 252), later)  # a copy in another month's index
    forged = _doc(s, 1000)
    forged["event"]["sequence"] = 1001
    put(1001, forged)  # after the last seal
    edited = _doc(s, 249)
    edited["user"]["name"] = "mallory"
    put(249, edited)
    key = AgentKey(s.key, integrity.key_id(s.key.public_key()))
    for seq, head in ((250, s.heads[100]), (900, s.heads[899])):
        hb = heartbeat_seal(
            key, agent_id=s.agent, stream_id=s.stream, sequence=seq, head=head,
            now_unix_nano=START + seq * 10**9 + 1,
        )  # fmt: skip
        sid, body = v2_store.seal_doc(s.agent, hb, [])
        client.index(index=seals_index(prefix), id=sid, body=body)
    gone = whole.seals[2]  # 101-150: the second stream is walked whole
    sid, _ = v2_store.seal_doc(whole.agent, gone, [])
    client.delete(index=seals_index(prefix), id=sid)
    client.indices.refresh(index=f"{prefix}-*")


def _json(verifier: Verifier) -> dict[str, Any]:
    report = verifier.run().to_json()
    report.pop("seconds")
    return report


def test_ranges_in_workers_give_the_one_walk_report(stored: Stored) -> None:
    cut, whole = stored.streams
    planner = stored.verifier(2)
    plans = planner._plans([(cut.agent, cut.stream), (whole.agent, whole.stream)])
    assert [p.first for p in plans[(cut.agent, cut.stream)].pieces] == [1, 251, 501, 751]
    assert (whole.agent, whole.stream) not in plans  # a seal missing: one walk

    one = _json(stored.verifier(1))
    ranged = _json(stored.verifier(2))
    assert ranged == one
    got = [
        (r["kind"], r["first"], r["last"])
        for r in ranged["agents"][f"{cut.agent}:{cut.stream}"]["ranges"]
    ]
    assert got == [
        ("VALID", 1, 248),
        ("ALTERED", 249, 249),
        ("CHAIN_BREAK", 250, 250),
        ("MISSING", 251, 251),
        ("INSERTED", 252, 252),
        ("VALID", 253, 499),
        ("ALTERED", 500, 500),
        ("VALID", 501, 749),
        ("REORDERED", 750, 751),
        ("VALID", 752, 1000),
        ("INSERTED", 1001, 1001),
    ]
    inserted = ranged["agents"][f"{cut.agent}:{cut.stream}"]["ranges"][4]
    assert inserted["indices"] == sorted(
        [v2_store.month_index(stored.prefix, START), v2_store.month_index(stored.prefix, LATER)]
    )
    assert ranged["agents"][f"{cut.agent}:{cut.stream}"]["seals"] == 22
    assert ranged["events_checked"] == 1001 + 300
