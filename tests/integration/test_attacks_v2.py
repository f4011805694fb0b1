"""The attacks of an OpenSearch writer without agent keys, on stream format 2 as the
agent ships it today, through the real pipeline: the real `crm-audit-agent` process
(enrolled with `crm-audit-agent key` and `crm-audit keys register`, tailing a jsonlines
file, batches of 10 sealed), a real collector process (mTLS gRPC with certificates from
our PKI, seals required, signed checkpoints every second) on the session's OpenSearch,
and the real `crm-audit verify` command.

Each test uses its own agent id, ships 30-60 events, tampers through OpenSearch's API
and asserts verify's complete list of ranges: exactly one verdict per sequence, exactly
the right sequences. Where a rule depends on the seal layout, the expected ranges are
computed from the seals the collector stored (the agent decides its batch cuts).

Covered elsewhere, not repeated here: state loss, and receipts catching a tail
truncation without checkpoints (`tests/integration/test_agent_state_loss.py`); the
deterministic version of the chain head overwritten before a checkpoint
(`tests/collector/test_formatv2_integration.py`).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent import stream as agent_stream
from collector.admin.pki import issue_agent
from collector.checkpoints import read_checkpoints
from proto import integrity
from proto.v1 import audit_pb2 as pb
from tests.integration.support import (
    SealingCollector,
    enroll,
    event_bytes,
    sealing_collector,
    verify_json,
    write_tailing_agent_config,
)
from tests.processes import BIN, ManagedProcess, wait_for

pytestmark = pytest.mark.integration

BATCH = 10
KEY = "collector-signing-key.pub"
Span = tuple[str, int, int]


@dataclass(frozen=True)
class Env(SealingCollector):
    @property
    def events(self) -> str:
        return f"{self.prefix}-events-*"

    @property
    def seals(self) -> str:
        return f"{self.prefix}-seals"


@pytest.fixture(scope="module")
def env(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("attacks-v2")
    with sealing_collector(root, opensearch_url, "attacks") as site:
        yield Env(**vars(site))


class Agent:
    """One enrolled `crm-audit-agent` (its own id, state and log file); `ship` runs the
    real process until what it read is stored and checkpointed, then stops it."""

    def __init__(self, env: Env, name: str) -> None:
        self.env = env
        self.name = name
        self.home = env.root / name
        self.state = self.home / "state"
        self.logs = self.home / "logs"
        self.logs.mkdir(parents=True)
        self.yaml = write_tailing_agent_config(
            self.home / "agent.yaml",
            env,
            name,
            issue_agent(env.pki, name),
            state_dir=self.state,
            logs=self.logs,
            max_events=BATCH,
        )
        enroll(self.yaml, env.keys, name)
        self.written = 0
        self.runs = 0

    @property
    def stream(self) -> str:
        found = agent_stream.read(self.state)
        assert found is not None, f"{self.name} has no stream yet"
        return found

    @property
    def label(self) -> str:
        """The report's name of this agent's one stream."""
        return f"{self.name}:{self.stream}"

    def ship(self, count: int) -> None:
        """`count` more lines (event times an hour ago: well within any retention)."""
        start = int(time.time()) - 3600
        with (self.logs / "crm.jsonl").open("a", encoding="utf-8") as out:
            for n in range(self.written + 1, self.written + count + 1):
                record = {
                    "timestamp": start + n,
                    "event": "record.update",
                    "user": {"id": f"u{n % 3}", "name": "alice"},
                    "object": {"type": "customer", "id": f"c-{n}"},
                    "n": n,
                }
                out.write(json.dumps(record) + "\n")
        self.written += count
        self.runs += 1
        process = ManagedProcess(
            ["crm-audit-agent", "run", "-c", str(self.yaml)], self.home / f"agent-{self.runs}.log"
        )
        try:
            wait_for(
                self._checkpointed,
                f"a checkpoint of {self.name} at {self.written}",
                timeout=120,
                watch=[process, self.env.process],
            )
        finally:
            code = process.stop()
        assert code == 0, process.log()[-3000:]
        self.env.refresh()

    def _checkpointed(self) -> bool:
        if agent_stream.read(self.state) is None:
            return False
        view = read_checkpoints(self.env.checkpoints)
        attested = view.streams.get((self.name, self.stream))
        return attested is not None and attested[0] == self.written

    def seal_spans(self) -> list[tuple[int, int]]:
        """(first, last) of the event seals the collector stored, in order."""
        return [(s["first_sequence"], s["last_sequence"]) for s in self._seals()]

    def _seals(self) -> list[dict[str, Any]]:
        self.env.refresh()
        body = {
            "size": 1000,
            "query": {
                "bool": {
                    "filter": [
                        {"term": {"agent.id": self.name}},
                        {"range": {"seal.event_count": {"gt": 0}}},
                    ]
                }
            },
            "sort": [{"seal.first_sequence": "asc"}],
        }
        hits = self.env.client.search(index=self.env.seals, body=body)["hits"]["hits"]
        return [{**h["_source"]["seal"], "_id": h["_id"], "_index": h["_index"]} for h in hits]

    def seal_doc(self, first: int) -> dict[str, Any]:
        (found,) = [s for s in self._seals() if s["first_sequence"] == first]
        return found

    def doc(self, seq: int) -> dict[str, Any]:
        body = {"query": {"ids": {"values": [f"{self.label}:{seq}"]}}}
        (hit,) = self.env.client.search(index=self.env.events, body=body)["hits"]["hits"]
        found: dict[str, Any] = hit
        return found

    def delete_events(self, first: int, last: int) -> None:
        """What an attacker does without _delete_by_query (not in the integ-test zip)."""
        self.env.refresh()
        query = {
            "bool": {
                "filter": [
                    {"term": {"agent.id": self.name}},
                    {"range": {"event.sequence": {"gte": first, "lte": last}}},
                ]
            }
        }
        body = {"query": query, "size": 10_000, "_source": False}
        hits = self.env.client.search(index=self.env.events, body=body)["hits"]["hits"]
        assert len(hits) == last - first + 1
        for hit in hits:
            self.env.client.delete(index=hit["_index"], id=hit["_id"])
        self.env.refresh()

    def export_receipts(self, out: Path) -> Path:
        done = subprocess.run(
            [str(BIN / "crm-audit-agent"), "receipts", "-c", str(self.yaml), "--out", str(out)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return out


@pytest.fixture
def agent(env: Env, request: pytest.FixtureRequest) -> Agent:
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.replace("test_", ""))[:40]
    return Agent(env, "v2-" + name.strip("-"))


def verify(env: Env, agent: Agent | str, *options: str, checkpoints: bool = True) -> Any:
    """`crm-audit verify --format json` for the agent with `options` (trust pinned to the
    keys directory and the collector key): (exit code, report). By default with the
    collector's checkpoint directory."""
    name = agent if isinstance(agent, str) else agent.name
    anchors = ["--checkpoints", str(env.checkpoints)] if checkpoints else []
    env.refresh()
    return verify_json(
        env.url,
        env.prefix,
        "--keys",
        str(env.keys),
        "--checkpoint-key",
        str(env.checkpoints / KEY),
        "--agent",
        name,
        *anchors,
        *options,
    )


def spans(report: dict[str, Any], label: str) -> list[Span]:
    found = [(r["kind"], r["first"], r["last"]) for r in report["agents"][label]["ranges"]]
    print(f"{label}: {found} {stream_kinds(report, label)}")  # the verdicts, for `pytest -s`
    return found


def the_range(report: dict[str, Any], label: str, kind: str) -> dict[str, Any]:
    (found,) = [r for r in report["agents"][label]["ranges"] if r["kind"] == kind]
    assert isinstance(found, dict)
    return found


def stream_kinds(report: dict[str, Any], label: str) -> list[str]:
    return [s["kind"] for s in report["agents"][label]["stream"]]


def test_untouched_stream_is_valid_with_every_anchor(env: Env, agent: Agent) -> None:
    agent.ship(30)
    assert agent.seal_spans() == [(1, 10), (11, 20), (21, 30)]
    receipts = agent.export_receipts(env.root / "receipts-baseline")
    code, report = verify(env, agent, "--receipts", str(receipts))
    assert code == 0, report
    assert spans(report, agent.label) == [("VALID", 1, 30)]
    assert stream_kinds(report, agent.label) == []
    source = agent.doc(7)["_source"]
    assert source["agent"]["stream"] == agent.stream
    assert pb.AuditEvent.FromString(event_bytes(env.client, env.prefix, agent.doc(7))).sequence == 7


def test_consistent_rehash_blames_exactly_the_altered_event(env: Env, agent: Agent) -> None:
    """Event 15 re-encoded with another user name (stored bytes and searchable field), its
    stored event hash and chain hash recomputed, and so are those of every later event:
    only 15 is ALTERED, in the index named."""
    agent.ship(30)
    hit = agent.doc(15)
    event = pb.AuditEvent.FromString(event_bytes(env.client, env.prefix, hit))
    assert event.user.name == "alice"
    event.user.name = "mallory"
    data = integrity.event_bytes_v2(event)
    head = integrity.head_link(
        bytes.fromhex(agent.doc(14)["_source"]["integrity"]["chain_hash"]),
        integrity.event_hash(data),
    )
    env.client.update(
        index=hit["_index"],
        id=hit["_id"],
        body={
            "doc": {
                "user": {"name": "mallory"},
                "integrity": {
                    "canonical": base64.b64encode(data).decode(),
                    "event_hash": integrity.event_hash(data).hex(),
                    "chain_hash": head.hex(),
                },
            }
        },
    )
    for seq in range(16, 31):  # the attacker recomputes every later stored chain hash
        later = agent.doc(seq)
        head = integrity.head_link(head, bytes.fromhex(later["_source"]["integrity"]["event_hash"]))
        env.client.update(
            index=later["_index"],
            id=later["_id"],
            body={"doc": {"integrity": {"chain_hash": head.hex()}}},
        )
    code, report = verify(env, agent)
    assert code == 1
    assert spans(report, agent.label) == [("VALID", 1, 14), ("ALTERED", 15, 15), ("VALID", 16, 30)]
    assert the_range(report, agent.label, "ALTERED")["indices"] == [hit["_index"]]


def _roll_back(agent: Agent, last: int) -> None:
    """Events and seals after `last` deleted, the chain head document set back to the
    head the seal ending at `last` signed."""
    env = agent.env
    after = [s for s in agent._seals() if s["last_sequence"] > last]
    agent.delete_events(last + 1, agent.written)
    for gone in after:
        env.client.delete(index=gone["_index"], id=gone["_id"])
    (kept,) = [s for s in agent._seals() if s["last_sequence"] == last]
    env.client.update(
        index=f"{env.prefix}-chainheads",
        id=agent.label,
        body={"doc": {"chain": {"sequence": last, "head": kept["chain_head"]}}},
        params={"refresh": "true"},
    )


def test_checkpoint_and_index_truncated_together(env: Env, agent: Agent, tmp_path: Path) -> None:
    """The last batch gone from OpenSearch (events, seal, head rolled back) and the
    checkpoint lines attesting it dropped: consistent, so only an earlier run's --state
    or the agent's receipts catch it."""
    agent.ship(20)  # a checkpoint at 20 ...
    agent.ship(10)  # ... and one at 30 (the agent restarted with its state: same stream)
    label = agent.label
    checkpoints = tmp_path / "checkpoints"  # this test's copy of the directory
    shutil.copytree(env.checkpoints, checkpoints)
    receipts = agent.export_receipts(tmp_path / "receipts")
    state = tmp_path / "verify.state"
    copy = ["--checkpoints", str(checkpoints)]
    code, report = verify(env, agent, *copy, "--state", str(state), checkpoints=False)
    assert code == 0, report
    assert spans(report, label) == [("VALID", 1, 30)]
    assert json.loads(state.read_text())["agents"][label] == 30

    _roll_back(agent, 20)
    (file,) = checkpoints.glob("checkpoints-*.jsonl")
    lines = file.read_bytes().splitlines(keepends=True)
    keep = next(
        i
        for i, line in enumerate(lines)
        if json.loads(line).get("streams", {}).get(label, {}).get("sequence") == 30
    )
    file.write_bytes(b"".join(lines[:keep]))

    code, report = verify(env, agent, *copy, checkpoints=False)
    assert code == 0, report  # nothing outside OpenSearch and the directory: undetectable
    assert spans(report, label) == [("VALID", 1, 20)]

    code, report = verify(env, agent, *copy, "--state", str(state), checkpoints=False)
    assert code == 1
    assert spans(report, label) == [("VALID", 1, 20)]
    assert stream_kinds(report, label) == ["CHECKPOINT_TRUNCATED"]
    assert any(f"{file.name} has {keep} lines" in p for p in report["problems"])

    code, report = verify(env, agent, *copy, "--receipts", str(receipts), checkpoints=False)
    assert code == 1
    assert spans(report, label) == [("VALID", 1, 20), ("TAIL_TRUNCATED", 21, 30)]
    assert stream_kinds(report, label) == ["RECEIPT_AHEAD"]
    assert "signed receipt" in the_range(report, label, "TAIL_TRUNCATED")["detail"]

    # The attacker deletes the checkpoint file instead: caught the same two ways.
    file.unlink()
    code, report = verify(env, agent, *copy, "--state", str(state), checkpoints=False)
    assert code == 1
    assert spans(report, label) == [("VALID", 1, 20)]
    assert sorted(stream_kinds(report, label)) == ["CHECKPOINT_MISSING", "CHECKPOINT_TRUNCATED"]
    assert any(f"{file.name} is gone" in p for p in report["problems"])
    code, report = verify(env, agent, *copy, "--receipts", str(receipts), checkpoints=False)
    assert code == 1
    assert spans(report, label) == [("VALID", 1, 20), ("TAIL_TRUNCATED", 21, 30)]
    assert sorted(stream_kinds(report, label)) == ["CHECKPOINT_MISSING", "RECEIPT_AHEAD"]


def test_faked_expiry_is_missing(env: Env, agent: Agent) -> None:
    """11-20 deleted and their seal's unsigned fields (indices, searchable time range)
    pointed at a 2020 index: the signed time range says an hour ago, so MISSING even
    with --retention-days."""
    agent.ship(30)
    agent.delete_events(11, 20)
    forged = agent.seal_doc(11)
    env.client.update(
        index=forged["_index"],
        id=forged["_id"],
        body={
            "doc": {
                "seal": {
                    "indices": [f"{env.prefix}-events-standard-2020.01"],
                    "min_event_time": "2020-01-01T00:00:00Z",
                    "max_event_time": "2020-01-02T00:00:00Z",
                }
            }
        },
        params={"refresh": "true"},
    )
    code, report = verify(env, agent, "--retention-days", "30")
    assert code == 1
    assert spans(report, agent.label) == [("VALID", 1, 10), ("MISSING", 11, 20), ("VALID", 21, 30)]


def test_live_unsealed_tail_is_pending_not_a_finding(env: Env, agent: Agent) -> None:
    """Events searchable, their seal not yet (its document removed to freeze that moment):
    PENDING within the grace period, exit 0. Past it, the seal is gone: the events chain
    into the head the signed checkpoint attests, so SEAL_MISSING (one verdict, genuine
    events never INSERTED); with no signed anchor nothing vouches for them: INSERTED."""
    agent.ship(30)
    last = agent.seal_doc(21)
    env.client.delete(index=last["_index"], id=last["_id"], params={"refresh": "true"})
    code, report = verify(env, agent)  # default grace: 120 s
    assert code == 0, report
    assert spans(report, agent.label) == [("VALID", 1, 20), ("PENDING", 21, 30)]
    code, report = verify(env, agent, "--grace", "0.001")
    assert code == 1
    assert spans(report, agent.label) == [("VALID", 1, 20), ("SEAL_MISSING", 21, 30)]
    assert "signed checkpoint" in the_range(report, agent.label, "SEAL_MISSING")["detail"]
    code, report = verify(env, agent, "--grace", "0.001", checkpoints=False)
    assert code == 1
    assert spans(report, agent.label) == [("VALID", 1, 20), ("INSERTED", 21, 30)]


def test_whole_stream_deleted_is_missing_stream_without_checkpoints(env: Env, agent: Agent) -> None:
    agent.ship(30)
    name = agent.name
    for index in (env.events, env.seals, f"{env.prefix}-chainheads"):
        env.refresh()
        body = {"query": {"term": {"agent.id": name}}, "size": 1000, "_source": False}
        for hit in env.client.search(index=index, body=body)["hits"]["hits"]:
            env.client.delete(index=hit["_index"], id=hit["_id"])
    # Only the keys directory says this agent exists.
    code, report = verify(env, agent, checkpoints=False)
    assert code == 1
    assert list(report["agents"]) == [name]
    assert stream_kinds(report, name) == ["MISSING_STREAM"]
    assert spans(report, name) == []
    assert "registered in the keys directory" in report["agents"][name]["stream"][0]["detail"]


def test_forged_duplicate_in_another_index_is_the_inserted_one(env: Env, agent: Agent) -> None:
    agent.ship(30)
    genuine = agent.doc(15)
    other = f"{env.prefix}-events-standard-2020.01"
    env.client.index(index=other, id=genuine["_id"], body=genuine["_source"])
    code, report = verify(env, agent)
    assert code == 1
    assert spans(report, agent.label) == [
        ("VALID", 1, 14),
        ("INSERTED", 15, 15),
        ("VALID", 16, 30),
    ]
    inserted = the_range(report, agent.label, "INSERTED")
    assert sorted(inserted["indices"]) == sorted([other, genuine["_index"]])
    assert inserted["detail"] == (
        f"extra document {genuine['_id']} in {other} "
        f"(the signed one is {genuine['_id']} in {genuine['_index']})"
    )


def test_seal_deleted_or_altered_gets_one_verdict(env: Env, agent: Agent) -> None:
    """Seal 11-20 deleted: its genuine events chain into the next seal, SEAL_MISSING only
    (not INSERTED). Seal 31-40's signed bytes altered: SEAL_INVALID only. Seal 51-60's
    searchable copy edited: SEAL_INVALID only."""
    agent.ship(60)
    assert agent.seal_spans() == [(s, s + 9) for s in range(1, 60, 10)]
    deleted = agent.seal_doc(11)
    env.client.delete(index=deleted["_index"], id=deleted["_id"])
    altered = agent.seal_doc(31)
    signed = pb.Seal.FromString(base64.b64decode(altered["raw"]))
    signed.time_unix_nano += 1
    raw = base64.b64encode(signed.SerializeToString()).decode()
    env.client.update(
        index=altered["_index"], id=altered["_id"], body={"doc": {"seal": {"raw": raw}}}
    )
    edited = agent.seal_doc(51)
    env.client.update(
        index=edited["_index"], id=edited["_id"], body={"doc": {"seal": {"last_sequence": 59}}}
    )
    code, report = verify(env, agent)
    assert code == 1
    assert spans(report, agent.label) == [
        ("VALID", 1, 10),
        ("SEAL_MISSING", 11, 20),
        ("VALID", 21, 30),
        ("SEAL_INVALID", 31, 40),
        ("VALID", 41, 50),
        ("SEAL_INVALID", 51, 60),
    ]


def test_events_deleted_inserted_swapped_and_edited(env: Env, agent: Agent) -> None:
    agent.ship(40)
    agent.delete_events(5, 5)
    # Contents swapped, ids and positions kept. The signed bytes are stored per batch
    # (collector.batchbytes), so the attacker moves them with the searchable fields by
    # putting them in the documents, as documents written before per-batch storage
    # carry them.
    a, b = agent.doc(13), agent.doc(14)
    a_bytes, b_bytes = (
        base64.b64encode(event_bytes(env.client, env.prefix, doc)).decode() for doc in (a, b)
    )
    env.client.index(
        index=a["_index"],
        id=a["_id"],
        body={
            **b["_source"],
            "event": {**b["_source"]["event"], "sequence": 13},
            "integrity": {**b["_source"]["integrity"], "canonical": b_bytes},
        },
    )
    env.client.index(
        index=b["_index"],
        id=b["_id"],
        body={
            **a["_source"],
            "event": {**a["_source"]["event"], "sequence": 14},
            "integrity": {**a["_source"]["integrity"], "canonical": a_bytes},
        },
    )
    # a forged event inside a sealed range, bytes self-consistent
    template, genuine = agent.doc(25), agent.doc(26)
    event = pb.AuditEvent.FromString(event_bytes(env.client, env.prefix, template))
    event.sequence = 26
    event.user.name = "mallory"
    data = integrity.event_bytes_v2(event)
    forged = json.loads(json.dumps(template["_source"]))
    forged["event"]["sequence"] = 26
    forged["user"]["name"] = "mallory"
    forged["integrity"]["canonical"] = base64.b64encode(data).decode()
    forged["integrity"]["event_hash"] = integrity.event_hash(data).hex()
    other = f"{env.prefix}-events-standard-2020.01"
    env.client.index(index=other, id=f"{agent.label}:26", body=forged)
    # a searchable field edited, the stored bytes intact
    c = agent.doc(35)
    env.client.update(index=c["_index"], id=c["_id"], body={"doc": {"user": {"name": "eve"}}})
    # and one after the last seal, past the grace period
    forged["event"]["sequence"] = 41
    env.client.index(index=template["_index"], id=f"{agent.label}:41", body=forged)
    code, report = verify(env, agent, "--grace", "0")
    assert code == 1
    assert spans(report, agent.label) == [
        ("VALID", 1, 4),
        ("MISSING", 5, 5),
        ("VALID", 6, 12),
        ("REORDERED", 13, 14),
        ("VALID", 15, 25),
        ("INSERTED", 26, 26),
        ("VALID", 27, 34),
        ("ALTERED", 35, 35),
        ("VALID", 36, 40),
        ("INSERTED", 41, 41),
    ]
    assert "user.name" in the_range(report, agent.label, "ALTERED")["detail"]
    inserted = [r for r in report["agents"][agent.label]["ranges"] if r["kind"] == "INSERTED"]
    assert sorted(inserted[0]["indices"]) == sorted([other, genuine["_index"]])
    assert inserted[1]["indices"] == [template["_index"]]


def test_chain_head_overwritten_before_a_checkpoint(env: Env, agent: Agent) -> None:
    """Agent A's chain head document overwritten with agent B's before the next
    checkpoint: the collector signs the head it verified itself, A's true one, and
    verify blames the edited record (CHAIN_HEAD_ALTERED), not A's intact event 10. (The
    deterministic version, with the checkpoint written on demand, is
    `tests/collector/test_formatv2_integration.py::
    test_checkpoints_sign_the_verified_heads_not_what_opensearch_says`.)"""
    agent.ship(10)
    other = Agent(env, agent.name + "-b")
    other.ship(10)
    true_head = agent.seal_doc(1)["chain_head"]
    heads = f"{env.prefix}-chainheads"
    forged = env.client.get(index=heads, id=other.label)["_source"]["chain"]
    assert forged["head"] != true_head
    env.client.update(
        index=heads, id=agent.label, body={"doc": {"chain": forged}}, params={"refresh": "true"}
    )
    (file,) = env.checkpoints.glob("checkpoints-*.jsonl")
    lines_before = len(file.read_bytes().splitlines())
    other.ship(10)  # the collector moves on and writes new checkpoint lines
    lines = file.read_bytes().splitlines()
    assert len(lines) > lines_before
    newest = json.loads(lines[-1])
    assert newest["streams"][agent.label]["sequence"] == 10
    assert newest["streams"][agent.label]["head"] == true_head
    # verify: the edited record is the finding, naming its index; the intact event it
    # names is not blamed.
    code, report = verify(env, agent)
    assert code == 1
    assert spans(report, agent.label) == [("VALID", 1, 10)]
    assert stream_kinds(report, agent.label) == ["CHAIN_HEAD_ALTERED"]
    detail = report["agents"][agent.label]["stream"][0]["detail"]
    assert f"chain head record in {heads} says head {forged['head'][:16]} at sequence 10" in detail
