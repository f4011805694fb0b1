"""`crm-audit verify` on format 2 streams whose event bytes are in batch documents
(`collector.batchbytes`), against a real OpenSearch and the real command.

The documents are written as the storage contract says (`tests.integration.v2_store`,
``batch_bytes_from``): event documents without ``integrity.canonical``, one batch
document per seal and events index in ``{prefix}-batches-<class>-<period>``. Each test
attacks OpenSearch as a writer without agent keys would and asserts the complete list
of ranges: a batch document deleted, undecodable, or holding another event's bytes,
and an edited event document, are findings, never VALID. Streams straddle a month so
that a seal's events go to two indices (two batch documents for one seal).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opensearchpy import OpenSearch

from collector.batchbytes import batches_index_pattern, decode, encode
from collector.index import OpenSearchHttp, make_client
from collector.verify import Verifier
from collector.verify.reading import FastJson
from proto import integrity
from tests.integration import v2_store
from tests.integration.support import drop_prefix, verify_json

pytestmark = pytest.mark.integration

# 2025-11-30T23:59:00Z: with one event a second, sequences 60 on are December's.
START = 1_764_547_140 * 10**9
EVENTS = 150
BATCH = 50


@dataclass
class Env:
    keys: Path
    prefix: str
    client: OpenSearch
    url: str

    def stream(self, count: int = EVENTS, since: int = 1) -> v2_store.Stream:
        """A new agent's stream of `count` events, bytes in batch documents from `since`."""
        name = f"batches-{uuid.uuid4().hex[:6]}"
        key = Ed25519PrivateKey.generate()
        v2_store.write_public_key(self.keys / f"{name}.pub", key)
        made = v2_store.build_stream(
            name, integrity.new_stream_id(), key, count, batch=BATCH, start_time=START
        )
        v2_store.store(self.client, self.prefix, made, batch_bytes_from=since)
        return made

    def verify(self, s: v2_store.Stream) -> tuple[int, list[dict[str, Any]]]:
        code, report = verify_json(
            self.url, self.prefix, "--keys", str(self.keys), "--agent", s.agent
        )
        return code, report["agents"][f"{s.agent}:{s.stream}"]["ranges"]

    def batch_doc(self, s: v2_store.Stream, first: int) -> dict[str, Any]:
        """The batch document of `s` whose range starts at `first`."""
        query = {
            "bool": {
                "filter": [
                    {"term": {"agent.id": s.agent}},
                    {"term": {"agent.stream": s.stream}},
                    {"term": {"batch.first": first}},
                ]
            }
        }
        hits = self.client.search(index=batches_index_pattern(self.prefix), body={"query": query})[
            "hits"
        ]["hits"]
        assert len(hits) == 1, hits
        return dict(hits[0])

    def rewrite(self, hit: dict[str, Any]) -> None:
        """What an attacker with write access does to a document."""
        self.client.index(index=hit["_index"], id=hit["_id"], body=hit["_source"], refresh=True)


@pytest.fixture(scope="module")
def env(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("verify-batches")
    keys = root / "keys"
    keys.mkdir()
    prefix = f"v2batches-{uuid.uuid4().hex[:8]}"
    client = OpenSearch(hosts=[opensearch_url], timeout=60)
    months = [v2_store.month_index(prefix, START), v2_store.month_index(prefix, START + 10**11)]
    assert months[0] != months[1]
    v2_store.create_indices(client, prefix, months, batches=True)
    try:
        yield Env(keys, prefix, client, opensearch_url)
    finally:
        drop_prefix(client, prefix)


def kinds(ranges: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    return [(r["kind"], r["first"], r["last"]) for r in ranges]


def test_the_batch_layout_verifies_valid(env: Env) -> None:
    s = env.stream()
    hit = env.batch_doc(s, 60)  # seal 51-100: its December part
    assert hit["_index"].endswith("2025.12") and hit["_source"]["batch"]["last"] == 100
    assert env.batch_doc(s, 51)["_index"].endswith("2025.11")
    code, ranges = env.verify(s)
    assert code == 0
    assert kinds(ranges) == [("VALID", 1, EVENTS)]


def test_documents_written_before_keep_their_inline_bytes(env: Env) -> None:
    """A stream whose first events were stored with inline bytes, the rest in batch
    documents (the change deployed mid-stream, mid-seal): no migration."""
    s = env.stream(since=76)
    code, ranges = env.verify(s)
    assert code == 0
    assert kinds(ranges) == [("VALID", 1, EVENTS)]


def test_a_deleted_batch_document_leaves_its_events_altered(env: Env) -> None:
    s = env.stream()
    hit = env.batch_doc(s, 101)
    env.client.delete(index=hit["_index"], id=hit["_id"], refresh=True)
    code, ranges = env.verify(s)
    assert code == 1
    assert kinds(ranges) == [("VALID", 1, 100)] + [("ALTERED", q, q) for q in range(101, 151)]
    assert ranges[1]["detail"].endswith(
        f"stored bytes unreadable: no batch document in {hit['_index']} lists sequence 101"
    )


def test_an_undecodable_batch_document_is_named(env: Env) -> None:
    s = env.stream()
    hit = env.batch_doc(s, 1)
    hit["_source"]["batch"]["bytes"] = hit["_source"]["batch"]["bytes"][:-12]  # truncated
    env.rewrite(hit)
    code, ranges = env.verify(s)
    assert code == 1
    assert kinds(ranges) == [("ALTERED", q, q) for q in range(1, 51)] + [("VALID", 51, EVENTS)]
    assert f"batch document {hit['_id']} in {hit['_index']}: batch bytes" in ranges[0]["detail"]


def test_another_events_bytes_in_a_batch_document_are_findings(env: Env) -> None:
    """Sequence 10 listed with the (signed) bytes of 11: document 10 carries no event
    of its own any more, document 11 keeps its own."""
    s = env.stream()
    hit = env.batch_doc(s, 1)
    batch = hit["_source"]["batch"]
    datas = decode(batch["bytes"], batch["count"])
    datas[9] = datas[10]
    batch["bytes"] = encode(datas)
    env.rewrite(hit)
    code, ranges = env.verify(s)
    assert code == 1
    # as with inline bytes: document 10 an extra copy of event 11, event 10 nowhere
    assert kinds(ranges) == [("VALID", 1, 9), ("MISSING", 10, 10), ("VALID", 11, EVENTS)]


def test_swapped_bytes_in_a_batch_document_are_reordered(env: Env) -> None:
    s = env.stream()
    hit = env.batch_doc(s, 60)
    batch = hit["_source"]["batch"]
    datas = decode(batch["bytes"], batch["count"])
    datas[0], datas[1] = datas[1], datas[0]  # sequences 60 and 61
    batch["bytes"] = encode(datas)
    env.rewrite(hit)
    code, ranges = env.verify(s)
    assert code == 1
    assert kinds(ranges) == [("VALID", 1, 59), ("REORDERED", 60, 61), ("VALID", 62, EVENTS)]


def test_an_edited_event_document_is_altered(env: Env) -> None:
    s = env.stream()
    index = v2_store.month_index(env.prefix, s.events[19].time_unix_nano)
    env.client.update(
        index=index,
        id=f"{s.agent}:{s.stream}:20",
        body={"doc": {"user": {"name": "bob"}}},
        refresh=True,
    )
    code, ranges = env.verify(s)
    assert code == 1
    assert kinds(ranges) == [("VALID", 1, 19), ("ALTERED", 20, 20), ("VALID", 21, EVENTS)]
    assert ranges[1]["detail"] == "fields differ from the signed bytes: user.name"


def test_ranges_in_worker_processes_read_their_batch_documents(env: Env) -> None:
    """A stream cut into ranges (each its own point in time over the batch documents
    from its first sequence on) gives the report of one walk."""
    s = env.stream(count=400)
    hit = env.batch_doc(s, 201)  # the first seal of a range
    env.client.delete(index=hit["_index"], id=hit["_id"], refresh=True)
    keys = {s.agent: {integrity.key_id(s.key.public_key()): s.key.public_key()}}

    def connect() -> OpenSearchHttp:
        return OpenSearchHttp(make_client(env.url, timeout_s=60, serializer=FastJson()))

    def verifier(workers: int) -> Verifier:
        return Verifier(
            connect(),
            env.prefix,
            lambda agent: keys.get(agent, {}),
            workers=workers,
            reopen=connect if workers > 1 else None,
            range_events=100,
        )

    def ranges(workers: int) -> list[tuple[str, int, int]]:
        report = verifier(workers).run([s.agent])
        return [(r.kind, r.first, r.last) for r in report.agents[f"{s.agent}:{s.stream}"].ranges]

    whole = ranges(1)
    assert whole == [("VALID", 1, 200)] + [("ALTERED", q, q) for q in range(201, 251)] + [
        ("VALID", 251, 400)
    ]
    plans = verifier(2)._plans([(s.agent, s.stream)])
    assert [p.first for p in plans[(s.agent, s.stream)].pieces] == [1, 101, 201, 301]
    assert ranges(2) == whole
