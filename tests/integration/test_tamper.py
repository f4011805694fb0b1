"""Tamper evidence end to end: a real collector process (mTLS gRPC, certificates from our
PKI, integrity checks, signed checkpoints) on the real OpenSearch of the session, and the
real `crm-audit verify` command.

The sending side is a test client built from `agent.sealing` (key on first start,
`Chainer`, `seal`) plus a gRPC mTLS channel: it produces exactly what the agent will
send once the lead wires `agent.sealing` into the runtime's integrity hooks (the
durable-spool runtime is being rewritten in parallel; an end-to-end run through the
agent process follows that wiring).

Each test uses its own agent id, ships 30 events in 3 sealed batches, tampers with
OpenSearch directly through its API, and asserts that `verify` fails naming the range
and kind.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from agent.sealing import PUBLIC_KEY_FILE, AgentKey, Chainer, seal
from collector.admin.pki import issue_agent
from collector.checkpoints import read_checkpoints
from proto import integrity
from proto.v1 import audit_pb2 as pb
from proto.v1 import audit_pb2_grpc as pb_grpc
from tests.collector.conftest import NOV_27_2026, make_event
from tests.integration.support import (
    SealingCollector,
    event_bytes,
    ranges,
    run_verify,
    sealing_collector,
)
from tests.processes import BIN, wait_for

pytestmark = pytest.mark.integration

EVENTS = 30
BATCH = 10
JAN_2020 = 1_579_000_000_000_000_000  # 2020-01-14
SEP_2026 = 1_789_000_000_000_000_000  # 2026-09-10


@dataclass(frozen=True)
class Env(SealingCollector):
    @property
    def events(self) -> str:
        return f"{self.prefix}-events-*"


@pytest.fixture(scope="module")
def env(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("tamper")
    with sealing_collector(root, opensearch_url, "tamper", require_seal=False) as site:
        yield Env(**vars(site))


class SendingAgent:
    """What the agent does at its two integrity hooks, driven by hand."""

    def __init__(self, env: Env, name: str) -> None:
        self.env = env
        self.name = name
        self.state = env.root / f"state-{name}"
        issued = issue_agent(env.pki, name)
        self.cert, self.key_path = issued.cert, issued.key
        self.key = AgentKey.load_or_create(self.state)
        self.chainer = Chainer.load(self.state, name)
        self.next_sequence = 1
        self.batch_id = 0
        # Registration through the admin tool, as an operator would do it.
        done = subprocess.run(
            [
                str(BIN / "crm-audit"),
                "keys",
                "register",
                str(env.keys),
                name,
                str(self.state / PUBLIC_KEY_FILE),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert self.key.key_id in done.stdout

    def batches(self, count: int, *, time_unix_nano: int = NOV_27_2026) -> list[pb.Batch]:
        out = []
        for start in range(0, count, BATCH):
            events = []
            for _ in range(min(BATCH, count - start)):
                seq = self.next_sequence
                self.next_sequence += 1
                event = make_event(seq, self.name, time_unix_nano=time_unix_nano + seq)
                self.chainer.link(event)  # hook 1: sequence assigned, before spooling
                events.append(event)
            self.batch_id += 1
            batch = pb.Batch(batch_id=self.batch_id, agent_id=self.name, events=events)
            seal(batch, self.key, now_unix_nano=NOV_27_2026 + self.batch_id)  # hook 2
            out.append(batch)
        return out

    def ship(
        self, batches: list[pb.Batch], *, as_agent: SendingAgent | None = None
    ) -> list[pb.Ack]:
        sender = as_agent or self
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(self.env.pki / "ca.crt").read_bytes(),
            private_key=sender.key_path.read_bytes(),
            certificate_chain=sender.cert.read_bytes(),
        )
        with grpc.secure_channel(f"127.0.0.1:{self.env.port}", credentials) as channel:
            return list(pb_grpc.CollectorStub(channel).Ship(iter(batches), timeout=60))

    def ingest(self, count: int = EVENTS, **kwargs: Any) -> None:
        acks = self.ship(self.batches(count, **kwargs))
        assert all(a.status == pb.Ack.STATUS_OK for a in acks), acks
        last = self.next_sequence - 1

        def checkpointed() -> bool:
            head = read_checkpoints(self.env.checkpoints).heads.get(self.name)
            return head is not None and head[0] == last

        wait_for(checkpointed, f"a checkpoint of {self.name} at {last}", watch=[self.env.process])
        self.env.refresh()


def verify(env: Env, agent: str, *extra: str) -> tuple[int, dict[str, Any]]:
    env.refresh()
    return run_verify(env.url, env.prefix, env.keys, env.checkpoints, agent, *extra)


def delete_where(env: Env, index: str, query: dict[str, Any]) -> int:
    """What an attacker does without _delete_by_query (not in the integ-test distribution)."""
    env.refresh()
    hits = env.client.search(index=index, body={"query": query, "size": 10_000, "_source": False})
    for hit in hits["hits"]["hits"]:
        env.client.delete(index=hit["_index"], id=hit["_id"])
    env.refresh()
    return len(hits["hits"]["hits"])


def get_doc(env: Env, agent: str, seq: int) -> dict[str, Any]:
    hits = env.client.search(index=env.events, body={"query": {"term": {"_id": f"{agent}:{seq}"}}})[
        "hits"
    ]["hits"]
    assert len(hits) == 1
    hit: dict[str, Any] = hits[0]
    return hit


def seal_doc(env: Env, agent: str, first: int) -> dict[str, Any]:
    env.refresh()
    hits = env.client.search(
        index=f"{env.prefix}-seals",
        body={
            "query": {
                "bool": {
                    "filter": [
                        {"term": {"agent.id": agent}},
                        {"term": {"seal.first_sequence": first}},
                    ]
                }
            }
        },
    )["hits"]["hits"]
    assert len(hits) == 1, hits
    hit: dict[str, Any] = hits[0]
    return hit


@pytest.fixture
def agent(env: Env, request: pytest.FixtureRequest) -> SendingAgent:
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.replace("test_", ""))[:40]
    name = "a-" + name.strip("-")
    return SendingAgent(env, name)


def test_untouched_trail_is_valid(env: Env, agent: SendingAgent) -> None:
    agent.ingest()
    code, report = verify(env, agent.name)
    assert code == 0, report
    assert ranges(report, agent.name) == [("VALID", 1, EVENTS)]
    assert report["agents"][agent.name]["seals"] == EVENTS // BATCH
    # the collector stored what the verifier needs beside the searchable fields
    hit = get_doc(env, agent.name, 5)
    assert event_bytes(env.client, env.prefix, hit)
    assert len(hit["_source"]["integrity"]["chain_hash"]) == 64


def test_searchable_field_altered(env: Env, agent: SendingAgent) -> None:
    agent.ingest()
    hit = get_doc(env, agent.name, 5)
    env.client.update(index=hit["_index"], id=hit["_id"], body={"doc": {"user": {"name": "bob"}}})
    code, report = verify(env, agent.name)
    assert code == 1
    found = [r for r in report["agents"][agent.name]["ranges"] if r["kind"] == "ALTERED"]
    assert [(r["first"], r["last"]) for r in found] == [(5, 5)]
    assert "user.name" in found[0]["detail"]


def test_field_and_stored_bytes_altered(env: Env, agent: SendingAgent) -> None:
    agent.ingest()
    hit = get_doc(env, agent.name, 12)
    event = pb.AuditEvent.FromString(event_bytes(env.client, env.prefix, hit))
    event.user.name = "bob"
    forged = base64.b64encode(integrity.canonical_event_bytes(event)).decode()
    env.client.update(
        index=hit["_index"],
        id=hit["_id"],
        body={"doc": {"user": {"name": "bob"}, "integrity": {"canonical": forged}}},
    )
    code, report = verify(env, agent.name)
    assert code == 1
    assert ("ALTERED", 12, 12) in ranges(report, agent.name)
    assert ("VALID", 13, EVENTS) in ranges(report, agent.name)


def test_event_deleted(env: Env, agent: SendingAgent) -> None:
    agent.ingest()
    hit = get_doc(env, agent.name, 7)
    env.client.delete(index=hit["_index"], id=hit["_id"])
    code, report = verify(env, agent.name)
    assert code == 1
    assert ("MISSING", 7, 7) in ranges(report, agent.name)


def test_forged_event_inserted(env: Env, agent: SendingAgent) -> None:
    agent.ingest()
    template = get_doc(env, agent.name, 4)
    # beyond the sealed range, with a self-consistent chain hash
    forged = json.loads(json.dumps(template["_source"]))
    forged["event"]["sequence"] = EVENTS + 1
    env.client.index(
        index=template["_index"], id=f"{agent.name}:{EVENTS + 1}", body=forged, op_type="create"
    )
    # and a second document for an existing sequence, in another index
    other = f"{env.prefix}-events-standard-2026.10"
    env.client.index(index=other, id=f"{agent.name}:4", body=template["_source"])
    code, report = verify(env, agent.name)
    assert code == 1
    found = ranges(report, agent.name)
    assert ("INSERTED", EVENTS + 1, EVENTS + 1) in found
    assert ("INSERTED", 4, 4) in found


def test_two_events_swapped(env: Env, agent: SendingAgent) -> None:
    agent.ingest()
    a, b = get_doc(env, agent.name, 14), get_doc(env, agent.name, 15)
    env.client.index(index=a["_index"], id=a["_id"], body=b["_source"])
    env.client.index(index=b["_index"], id=b["_id"], body=a["_source"])
    code, report = verify(env, agent.name)
    assert code == 1
    assert ("REORDERED", 14, 15) in ranges(report, agent.name)


def test_newest_events_deleted_caught_by_checkpoint(env: Env, agent: SendingAgent) -> None:
    agent.ingest()
    # a thorough attacker: events, their seal and the chain head record
    deleted = delete_where(
        env,
        env.events,
        {
            "bool": {
                "filter": [
                    {"term": {"agent.id": agent.name}},
                    {"range": {"event.sequence": {"gte": 21}}},
                ]
            }
        },
    )
    assert deleted == 10
    last_seal = seal_doc(env, agent.name, 21)
    env.client.delete(index=last_seal["_index"], id=last_seal["_id"], refresh=True)
    env.client.delete(index=f"{env.prefix}-chainheads", id=agent.name, refresh=True)
    code, report = verify(env, agent.name)
    assert code == 1
    assert ranges(report, agent.name) == [("VALID", 1, 20), ("TAIL_TRUNCATED", 21, EVENTS)]


def test_whole_agent_deleted(env: Env, agent: SendingAgent) -> None:
    agent.ingest()
    query = {"term": {"agent.id": agent.name}}
    assert delete_where(env, env.events, query) == EVENTS
    code, report = verify(env, agent.name)
    assert code == 1
    assert ranges(report, agent.name) == [("MISSING", 1, EVENTS)]  # the seals prove it
    delete_where(env, f"{env.prefix}-seals,{env.prefix}-chainheads", query)
    code, report = verify(env, agent.name)
    assert code == 1
    assert ranges(report, agent.name) == [("TAIL_TRUNCATED", 1, EVENTS)]  # the checkpoint


def test_seal_deleted(env: Env, agent: SendingAgent) -> None:
    agent.ingest()
    hit = seal_doc(env, agent.name, 11)
    env.client.delete(index=hit["_index"], id=hit["_id"], refresh=True)
    code, report = verify(env, agent.name)
    assert code == 1
    assert ("SEAL_MISSING", 11, 20) in ranges(report, agent.name)


@pytest.mark.parametrize("how", ["searchable", "signed"])
def test_seal_altered(env: Env, agent: SendingAgent, how: str) -> None:
    agent.ingest()
    hit = seal_doc(env, agent.name, 11)
    if how == "searchable":
        change: dict[str, Any] = {"seal": {"last_sequence": 19}}
    else:
        signed = pb.Seal.FromString(base64.b64decode(hit["_source"]["seal"]["raw"]))
        signed.time_unix_nano += 1
        change = {"seal": {"raw": base64.b64encode(signed.SerializeToString()).decode()}}
    env.client.update(index=hit["_index"], id=hit["_id"], body={"doc": change}, refresh=True)
    code, report = verify(env, agent.name)
    assert code == 1
    kinds = {(k, f, t) for k, f, t in ranges(report, agent.name)}
    assert ("SEAL_INVALID", 11, 20) in kinds
    assert ("VALID", 11, 20) not in kinds


def test_batch_replayed_with_another_agents_certificate(env: Env, agent: SendingAgent) -> None:
    other = SendingAgent(env, agent.name + "-other")
    stolen = agent.batches(10)
    renamed = pb.Batch()
    renamed.CopyFrom(stolen[0])
    renamed.agent_id = other.name  # claims to be the sender; the seal still names `agent`
    acks = agent.ship([stolen[0], renamed], as_agent=other)
    assert [a.status for a in acks] == [pb.Ack.STATUS_REJECTED, pb.Ack.STATUS_REJECTED]
    assert "seal names agent" in acks[1].detail
    env.refresh()
    count = env.client.count(
        index=env.events,
        body={"query": {"terms": {"agent.id": [agent.name, other.name]}}},
        params={"ignore_unavailable": "true"},
    )["count"]
    assert count == 0


def test_index_deleted_without_retention_record_is_missing(env: Env, agent: SendingAgent) -> None:
    """A whole index gone, old or young, without a signed retention record: MISSING.

    (EXPIRED needs the record the retention job signs before it deletes:
    tests/integration/test_retention_job.py.)"""
    old = SendingAgent(env, agent.name + "-2020")
    old.ingest(time_unix_nano=JAN_2020)
    young = SendingAgent(env, agent.name + "-2026")
    young.ingest(time_unix_nano=SEP_2026)
    env.client.indices.delete(index=f"{env.prefix}-events-standard-2020.01")
    env.client.indices.delete(index=f"{env.prefix}-events-standard-2026.09")
    code, report = verify(env, old.name, "--retention-days", "365")
    assert code == 1
    assert ranges(report, old.name) == [("MISSING", 1, EVENTS)]
    code, report = verify(env, young.name)
    assert code == 1
    assert ranges(report, young.name) == [("MISSING", 1, EVENTS)]


def test_chain_head_record_overwritten_blames_the_record(env: Env, agent: SendingAgent) -> None:
    """Agent A's format 1 chain head record overwritten with agent B's: the edited record
    is the finding (CHAIN_HEAD_ALTERED, naming its index); A's intact event 30, which the
    record names, is not blamed. (Format 2: test_attacks_v2.py.)"""
    agent.ingest()
    other = SendingAgent(env, agent.name + "-b")
    other.ingest()
    heads = f"{env.prefix}-chainheads"
    forged = env.client.get(index=heads, id=other.name)["_source"]["chain"]
    assert forged["sequence"] == EVENTS
    assert forged["head"] != env.client.get(index=heads, id=agent.name)["_source"]["chain"]["head"]
    env.client.update(
        index=heads, id=agent.name, body={"doc": {"chain": forged}}, params={"refresh": "true"}
    )
    code, report = verify(env, agent.name)
    assert code == 1
    assert ranges(report, agent.name) == [("VALID", 1, EVENTS)]
    found = report["agents"][agent.name]["stream"]
    assert [f["kind"] for f in found] == ["CHAIN_HEAD_ALTERED"]
    says = f"chain head record in {heads} says head {forged['head'][:16]} at sequence {EVENTS}"
    assert says in found[0]["detail"]
    code, report = verify(env, other.name)
    assert code == 0, report


def test_last_seal_deleted_vouched_by_the_checkpoint(env: Env, agent: SendingAgent) -> None:
    """The last seal deleted, its events left: past the grace period they are genuine
    events whose seal is gone (SEAL_MISSING) because their bytes chain from the last
    signed head into the head the signed checkpoint attests; without the checkpoint the
    chain head record (unsigned) vouches for nothing: INSERTED."""
    agent.ingest()
    last_seal = seal_doc(env, agent.name, 21)
    env.client.delete(index=last_seal["_index"], id=last_seal["_id"], refresh=True)
    code, report = verify(env, agent.name)  # default grace: 120 s, just ingested
    assert code == 0, report
    assert ranges(report, agent.name) == [("VALID", 1, 20), ("PENDING", 21, EVENTS)]
    code, report = verify(env, agent.name, "--grace", "0.001")
    assert code == 1
    assert ranges(report, agent.name) == [("VALID", 1, 20), ("SEAL_MISSING", 21, EVENTS)]
    assert "signed checkpoint" in report["agents"][agent.name]["ranges"][1]["detail"]
    empty = env.root / "no-checkpoints"
    empty.mkdir()
    (empty / "collector-signing-key.pub").write_bytes(
        (env.checkpoints / "collector-signing-key.pub").read_bytes()
    )
    code, report = run_verify(env.url, env.prefix, env.keys, empty, agent.name, "--grace", "0.001")
    assert code == 1
    assert ranges(report, agent.name) == [("VALID", 1, 20), ("INSERTED", 21, EVENTS)]
