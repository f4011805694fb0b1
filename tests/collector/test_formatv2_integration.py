"""Stream format 2 end to end: a real collector (gRPC over mTLS, certificates from our
PKI, keys registered, checkpoints on) and the real OpenSearch of the session, fed with
hand-built signed v2 batches (`tests.collector.v2sender`, from `proto.integrity` only)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.checkpoints import read_checkpoints
from collector.config import load_config
from collector.documents import iso_nanos
from collector.index import Requester
from collector.server import CollectorServer
from proto import integrity
from proto.v1 import audit_pb2 as pb
from proto.v1 import audit_pb2_grpc as pb_grpc
from tests.collector.conftest import Pki, make_event, search, write_config
from tests.collector.v2sender import V2Stream, register
from tests.helpers import batch_bytes, stored_bytes

pytestmark = pytest.mark.integration

AGENT = "crm-v2"


@dataclass
class Env:
    server: CollectorServer
    pki: Pki
    http: Requester
    prefix: str
    keys: Path
    checkpoints: Path

    def ship(self, batches: list[pb.Batch], agent: str = AGENT) -> list[pb.Ack]:
        cert, key = self.pki.layout.agent_cert(agent), self.pki.layout.agent_key(agent)
        if not cert.exists():
            self.pki.agent(agent)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.pki.layout.ca_cert.read_bytes(),
            private_key=key.read_bytes(),
            certificate_chain=cert.read_bytes(),
        )
        with grpc.secure_channel(f"127.0.0.1:{self.server.port}", credentials) as channel:
            return list(pb_grpc.CollectorStub(channel).Ship(iter(batches), timeout=60))

    def docs(self, index: str) -> dict[str, Any]:
        return {h["_id"]: h for h in search(self.http, f"{self.prefix}-{index}")}


@pytest.fixture
def env(tmp_path: Path, pki: Pki, prefix: str, os_url: str, os_http: Requester) -> Iterator[Env]:
    keys, checkpoints = tmp_path / "cfg" / "keys", tmp_path / "cfg" / "checkpoints"
    keys.mkdir(parents=True)
    config = load_config(
        write_config(
            tmp_path / "cfg",
            pki,
            prefix=prefix,
            url=os_url,
            # The writer thread waits an hour: the tests write checkpoints themselves.
            integrity={
                "keys_dir": "keys",
                "checkpoint_dir": "checkpoints",
                "checkpoint_interval_s": 3600,
            },
        )
    )
    server = CollectorServer(config)
    server.start()
    try:
        yield Env(server, pki, os_http, prefix, keys, checkpoints)
    finally:
        server.stop(grace_s=5)


@pytest.fixture
def key(env: Env) -> Ed25519PrivateKey:
    value = Ed25519PrivateKey.generate()
    register(env.keys, AGENT, value)
    return value


def test_v2_batches_are_stored_per_the_contract_beside_v1(env: Env, key: Ed25519PrivateKey) -> None:
    stream = V2Stream(AGENT, key)
    # One event of a later month: its index follows its own effective time.
    batches = [
        stream.batch(10),
        stream.batch(5),
        stream.batch(1, time_unix_nano=1_798_000_000 * 10**9),
    ]
    acks = env.ship(batches)
    assert [(a.status, a.indexed) for a in acks] == [
        (pb.Ack.STATUS_OK, 10),
        (pb.Ack.STATUS_OK, 5),
        (pb.Ack.STATUS_OK, 1),
    ]
    # A format 1 agent on the same collector still goes through.
    v1 = pb.Batch(batch_id=1, agent_id="crm-v1", events=[make_event(n, "crm-v1") for n in (1, 2)])
    assert env.ship([v1], agent="crm-v1")[0].status == pb.Ack.STATUS_OK

    events = env.docs("events-*")
    table = batch_bytes(
        env.prefix, [(h["_index"], h["_source"]) for h in env.docs("batches-*").values()]
    )
    s = stream.stream_id
    assert {"crm-v1:1", "crm-v1:2"} <= set(events)
    assert "stream" not in events["crm-v1:1"]["_source"]["agent"]
    assert events["crm-v1:1"]["_source"]["integrity"]["canonical"]  # format 1: inline
    for sequence, (data, head) in stream.sent.items():
        hit = events[f"{AGENT}:{s}:{sequence}"]
        source = hit["_source"]
        event = pb.AuditEvent.FromString(data)
        assert source["agent"]["stream"] == s
        # format 2: the bytes once per batch and events index (collector.batchbytes)
        assert "canonical" not in source["integrity"]
        assert stored_bytes(hit["_index"], source, table) == data
        assert source["integrity"]["event_hash"] == integrity.event_hash(data).hex()
        assert source["integrity"]["chain_hash"] == head.hex()
        assert source["@timestamp"] == iso_nanos(integrity.effective_time(event))
        month = "2026.12" if sequence == 16 else "2026.11"
        assert hit["_index"] == f"{env.prefix}-events-standard-{month}"

    seals = env.docs("seals")
    last = batches[2].seal
    doc = seals[f"{AGENT}:{s}:16-16:{last.chain_head.hex()[:32]}"]["_source"]["seal"]
    assert doc["stream"] == s and doc["format_version"] == 2 and doc["verified"] is True
    assert (
        doc["min_event_time"] == doc["max_event_time"] == iso_nanos(last.min_event_time_unix_nano)
    )
    assert doc["indices"] == [f"{env.prefix}-events-standard-2026.12"]

    heads = env.docs("chainheads")
    chain = heads[f"{AGENT}:{s}"]["_source"]
    assert chain["agent"] == {"id": AGENT, "stream": s}
    assert (chain["chain"]["sequence"], chain["chain"]["head"]) == (16, stream.head.hex())
    alerts = [a["_source"] for a in env.docs("alerts").values()]
    assert [a["agent"]["id"] for a in alerts] == ["crm-v1"]  # unsealed, a format 1 agent


def test_restart_without_state_is_one_alert_and_both_streams_stay(
    env: Env, key: Ed25519PrivateKey
) -> None:
    old = V2Stream(AGENT, key)
    assert [a.status for a in env.ship([old.batch(10), old.batch(10)])] == [pb.Ack.STATUS_OK] * 2
    new = V2Stream(AGENT, key)  # the agent lost its state: a new stream at sequence 1
    first = new.batch(10)
    acks = env.ship([first, first, new.batch(5)])  # the first one re-delivered
    # (pipelined: the two copies may be indexed concurrently, so which ack counts which
    # event as the duplicate varies; together they are 10 + 10)
    assert [a.status for a in acks] == [pb.Ack.STATUS_OK] * 3
    assert (sum(a.indexed for a in acks), sum(a.duplicates for a in acks)) == (15, 10)
    events = env.docs("events-*")
    # Nothing collided: sequences 1-10 exist twice, once per stream.
    assert len(events) == 35
    assert {f"{AGENT}:{old.stream_id}:1", f"{AGENT}:{new.stream_id}:1"} <= set(events)
    alerts = [a["_source"] for a in env.docs("alerts").values()]
    assert [a["alert"]["kind"] for a in alerts] == ["agent_restarted_without_state"]
    assert alerts[0]["agent"] == {"id": AGENT, "stream": new.stream_id}
    assert alerts[0]["alert"]["reason"] == (
        f"agent {AGENT} restarted without state at {iso_nanos(first.seal.time_unix_nano)}; "
        f"previous stream {old.stream_id} ended at sequence 20"
    )
    heads = env.docs("chainheads")
    assert heads[f"{AGENT}:{old.stream_id}"]["_source"]["chain"]["sequence"] == 20
    chain = heads[f"{AGENT}:{new.stream_id}"]["_source"]["chain"]
    assert (chain["sequence"], chain["head"]) == (15, new.head.hex())
    assert (chain["previous_stream"], chain["previous_sequence"]) == (old.stream_id, 20)


def test_a_differing_redelivery_is_kept_in_the_forks_index(
    env: Env, key: Ed25519PrivateKey
) -> None:
    stream = V2Stream(AGENT, key)
    assert env.ship([stream.batch(10)])[0].indexed == 10
    events = [pb.AuditEvent.FromString(stream.sent[n][0]) for n in range(1, 11)]
    events[6].user.name = "mallory"  # sequence 7, re-signed by the key holder
    forked = stream.sealed(events, prev=integrity.genesis_v2(AGENT, stream.stream_id))
    [ack] = env.ship([forked])
    assert (ack.status, ack.indexed, ack.duplicates) == (pb.Ack.STATUS_OK, 0, 10)
    data = integrity.event_bytes_v2(events[6])
    original_id = f"{AGENT}:{stream.stream_id}:7"
    forks = env.docs("forks")
    assert list(forks) == [f"{original_id}:{integrity.event_hash(data).hex()[:16]}"]
    [fork] = forks.values()
    assert base64.b64decode(fork["_source"]["integrity"]["canonical"]) == data
    assert fork["_source"]["user"]["name"] == "mallory"
    stored = env.docs("events-*")[original_id]["_source"]
    assert stored["user"]["name"] == "alice"  # the stored one kept
    alerts = [a["_source"]["alert"] for a in env.docs("alerts").values()]
    assert sorted((a["kind"], a["first_sequence"]) for a in alerts) == [("fork", 7), ("fork", 10)]


def collector_public_key(env: Env) -> dict[str, Any]:
    [pub] = env.checkpoints.glob("*.pub")
    keys = integrity.load_public_keys(pub.read_bytes())
    return {integrity.key_id(k): k for k in keys}


def test_ok_acks_carry_receipts_signed_with_the_checkpoint_key(
    env: Env, key: Ed25519PrivateKey
) -> None:
    stream = V2Stream(AGENT, key)
    acks = env.ship([stream.batch(10), stream.batch(10), stream.heartbeat()])
    trusted = collector_public_key(env)
    assert all(a.status == pb.Ack.STATUS_OK for a in acks)
    assert all(integrity.receipt_valid(a.receipt, trusted) for a in acks)
    assert [(a.receipt.stream_id, a.receipt.last_sequence) for a in acks] == [
        (stream.stream_id, 10),
        (stream.stream_id, 20),
        (stream.stream_id, 20),
    ]
    assert [a.receipt.head for a in acks] == [stream.sent[n][1] for n in (10, 20, 20)]


def v1_sealed(agent: str, key: Ed25519PrivateKey, sequences: range) -> pb.Batch:
    """A sealed format 1 batch from `proto.integrity` (chain from the agent's genesis)."""
    head = integrity.genesis(agent)
    events = []
    for n in sequences:
        event = make_event(n, agent)
        head = integrity.chain_link(head, integrity.canonical_event_bytes(event))
        event.chain_hash = head
        events.append(event)
    seal = pb.Seal(
        agent_id=agent,
        first_sequence=sequences[0],
        last_sequence=sequences[-1],
        prev_chain_head=integrity.genesis(agent),
        chain_head=head,
        event_count=len(events),
        time_unix_nano=1,
    )
    integrity.sign_seal(seal, key)
    return pb.Batch(batch_id=1, agent_id=agent, events=events, seal=seal)


def test_checkpoints_sign_the_verified_heads_not_what_opensearch_says(
    env: Env, key: Ed25519PrivateKey
) -> None:
    stream = V2Stream(AGENT, key)
    assert all(a.status == pb.Ack.STATUS_OK for a in env.ship([stream.batch(10)]))
    v1_key = Ed25519PrivateKey.generate()
    register(env.keys, "crm-v1", v1_key)
    v1 = v1_sealed("crm-v1", v1_key, range(1, 6))
    assert env.ship([v1], agent="crm-v1")[0].status == pb.Ack.STATUS_OK
    # Someone with write access to OpenSearch swaps the two chain heads.
    v2_id = f"{AGENT}:{stream.stream_id}"
    stored = env.docs("chainheads")
    swapped = {
        v2_id: stored["crm-v1"]["_source"]["chain"],
        "crm-v1": stored[v2_id]["_source"]["chain"],
    }
    for doc_id, chain in swapped.items():
        body = {**stored[doc_id]["_source"], "chain": chain}
        answer = env.http("PUT", f"/{env.prefix}-chainheads/_doc/{doc_id}", body=body)
        assert answer.status == 200, answer.body
    assert {d: h["_source"]["chain"]["head"] for d, h in env.docs("chainheads").items()} == {
        v2_id: v1.seal.chain_head.hex(),
        "crm-v1": stream.head.hex(),
    }
    assert env.server.checkpoints is not None
    assert env.server.checkpoints.write_once()
    view = read_checkpoints(env.checkpoints, collector_public_key(env))
    assert view.problems == []
    assert view.streams[(AGENT, stream.stream_id)][:2] == (10, stream.head.hex())
    assert view.heads["crm-v1"][:2] == (5, v1.seal.chain_head.hex())
