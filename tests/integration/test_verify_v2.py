"""`crm-audit verify` on stream format 2, against a real OpenSearch and the real command.

The documents, signed v2 seals and chain heads are written as the storage contract says
the collector writes them (`tests.integration.v2_store`); each test then attacks
OpenSearch directly as a writer without agent keys would, and asserts the complete list
of ranges: one verdict per sequence, exactly the right sequences.

What the collector and agent can produce is attacked through the real pipeline in
`tests/integration/test_attacks_v2.py` (re-hash, deleted / inserted / swapped / edited
events, forged duplicates, faked expiry, seals deleted or altered, truncation with
anchors); this file keeps what needs hand-made streams: a legitimate EXPIRED from old
signed times, hand-made receipts (a rogue signer, a disagreeing head), restart with key
rotation and the --from/--to window.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opensearchpy import OpenSearch

from collector.documents import iso_nanos
from collector.gate import chainheads_index, seals_index
from proto import integrity
from tests.integration import v2_store
from tests.integration.support import drop_prefix, verify_json

pytestmark = pytest.mark.integration

DAY = 86_400 * 10**9


@dataclass
class Env:
    root: Path
    keys: Path
    prefix: str
    client: OpenSearch
    url: str
    collector_key: Ed25519PrivateKey

    def agent(self, name: str) -> Ed25519PrivateKey:
        key = Ed25519PrivateKey.generate()
        v2_store.write_public_key(self.keys / f"{name}.pub", key)
        return key

    def verify(self, agent: str, *extra: str) -> tuple[int, dict[str, Any]]:
        return verify_json(
            self.url, self.prefix, "--keys", str(self.keys), "--agent", agent, *extra
        )


def now_ns() -> int:
    return time.time_ns()


RECENT = now_ns() - 2 * DAY
OLD = 1_579_000_000_000_000_000  # 2020-01-14


@pytest.fixture(scope="module")
def env(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("verify-v2")
    keys = root / "keys"
    keys.mkdir()
    prefix = f"v2verify-{uuid.uuid4().hex[:8]}"
    client = OpenSearch(hosts=[opensearch_url], timeout=60)
    months = sorted(
        {v2_store.month_index(prefix, t + d * DAY) for t in (RECENT, OLD) for d in range(0, 3)}
    )
    v2_store.create_indices(client, prefix, months)
    collector_key = Ed25519PrivateKey.generate()
    v2_store.write_public_key(keys / "collector.pub", collector_key)
    try:
        yield Env(root, keys, prefix, client, opensearch_url, collector_key)
    finally:
        drop_prefix(client, prefix)


def ranges(report: dict[str, Any], label: str) -> list[tuple[str, int, int]]:
    return [(r["kind"], r["first"], r["last"]) for r in report["agents"][label]["ranges"]]


def stream_kinds(report: dict[str, Any], label: str) -> list[str]:
    return [s["kind"] for s in report["agents"][label]["stream"]]


def _delete_events(env: Env, agent: str, stream: str, first: int, last: int) -> None:
    """What an attacker does (no _delete_by_query in the integ-test distribution)."""
    env.client.indices.refresh(index=f"{env.prefix}-*")
    query = {
        "bool": {
            "filter": [
                {"term": {"agent.id": agent}},
                {"term": {"agent.stream": stream}},
                {"range": {"event.sequence": {"gte": first, "lte": last}}},
            ]
        }
    }
    hits = env.client.search(
        index=f"{env.prefix}-events-*", body={"query": query, "size": 10_000, "_source": False}
    )["hits"]["hits"]
    assert len(hits) == last - first + 1
    for hit in hits:
        env.client.delete(index=hit["_index"], id=hit["_id"])
    env.client.indices.refresh(index=f"{env.prefix}-*")


def test_restart_is_a_finding_both_streams_valid(env: Env) -> None:
    """State lost: a second stream from its genesis. Both streams VALID on their own, the
    later one carries AGENT_RESTARTED (exit 1); a registered agent without any stream is
    MISSING_STREAM."""
    name = f"restart-{uuid.uuid4().hex[:6]}"
    key = env.agent(name)
    first, second = integrity.new_stream_id(), integrity.new_stream_id()
    old = v2_store.build_stream(name, first, key, 120, batch=50, start_time=RECENT)
    new_key = env.agent(name)  # re-enrollment: a new key registered
    # the keys file holds both keys (rotation history)
    (env.keys / f"{name}.pub").write_bytes(
        integrity.public_key_pem(key.public_key()) + integrity.public_key_pem(new_key.public_key())
    )
    new = v2_store.build_stream(name, second, new_key, 70, batch=50, start_time=RECENT + DAY // 2)
    v2_store.store(env.client, env.prefix, old)
    v2_store.store(env.client, env.prefix, new)
    code, report = env.verify(name)
    assert code == 1
    assert ranges(report, f"{name}:{first}") == [("VALID", 1, 120)]
    assert ranges(report, f"{name}:{second}") == [("VALID", 1, 70)]
    assert stream_kinds(report, f"{name}:{first}") == []
    assert stream_kinds(report, f"{name}:{second}") == ["AGENT_RESTARTED"]
    detail = report["agents"][f"{name}:{second}"]["stream"][0]["detail"]
    assert f"previous stream {first} ended at sequence 120" in detail

    silent = f"silent-{uuid.uuid4().hex[:6]}"
    env.agent(silent)
    code, report = env.verify(silent)
    assert code == 1
    assert stream_kinds(report, silent) == ["MISSING_STREAM"]


def test_expired_only_from_signed_time(env: Env) -> None:
    """Events whose signed time is older than the retention: EXPIRED. (A faked expiry,
    unsigned seal fields pointed at an old index, is MISSING: the real-pipeline attack
    in tests/integration/test_attacks_v2.py.)"""
    old_name = f"old-{uuid.uuid4().hex[:6]}"
    old_stream = integrity.new_stream_id()
    old = v2_store.build_stream(
        old_name, old_stream, env.agent(old_name), 300, batch=100, start_time=OLD
    )
    v2_store.store(env.client, env.prefix, old)
    _delete_events(env, old_name, old_stream, 1, 200)
    code, report = env.verify(old_name, "--retention-days", "30")
    assert ranges(report, f"{old_name}:{old_stream}") == [
        ("EXPIRED", 1, 200),
        ("VALID", 201, 300),
    ]
    assert code == 1  # EXPIRED is reported as a finding, as before
    # without a retention rule nothing is EXPIRED
    code, report = env.verify(old_name)
    assert ranges(report, f"{old_name}:{old_stream}")[0] == ("MISSING", 1, 200)


def test_receipts_catch_truncation_of_opensearch(env: Env) -> None:
    """The tail 1201-1500 deleted with its seals, the chain head rolled back: OpenSearch
    alone looks whole; the agent's exported receipt (signed by the collector) says the
    stream reached 1500. A receipt signed by another key is reported and not trusted."""
    name = f"receipt-{uuid.uuid4().hex[:6]}"
    stream = integrity.new_stream_id()
    s = v2_store.build_stream(name, stream, env.agent(name), 1500, batch=300, start_time=RECENT)
    v2_store.store(env.client, env.prefix, s)
    _delete_events(env, name, stream, 1201, 1500)
    env.client.delete(
        index=seals_index(env.prefix), id=v2_store.seal_doc(name, s.seals[4], [])[0], refresh=True
    )
    env.client.update(
        index=chainheads_index(env.prefix),
        id=f"{name}:{stream}",
        body={"doc": {"chain": {"sequence": 1200, "head": s.heads[1199].hex()}}},
        refresh=True,
    )
    label = f"{name}:{stream}"
    code, report = env.verify(name)
    assert code == 0, json.dumps(report)  # without an anchor outside OpenSearch: undetectable
    receipts = env.root / f"receipts-{name}"
    receipts.mkdir()
    rogue = Ed25519PrivateKey.generate()
    (receipts / "agent.jsonl").write_text(
        v2_store.receipt_line(env.collector_key, name, stream, 1200, s.heads[1199], now_ns())
        + "\n"
        + v2_store.receipt_line(env.collector_key, name, stream, 1500, s.heads[1499], now_ns())
        + "\n"
        + v2_store.receipt_line(rogue, name, stream, 1600, s.heads[1499], now_ns())
        + "\n",
        encoding="utf-8",
    )
    code, report = env.verify(name, "--receipts", str(receipts))
    assert code == 1
    assert ranges(report, label) == [("VALID", 1, 1200), ("TAIL_TRUNCATED", 1201, 1500)]
    assert "signed receipt" in report["agents"][label]["ranges"][1]["detail"]
    assert any("agent.jsonl:3" in p and "not trusted" in p for p in report["problems"])
    # a receipt whose head disagrees with the signed seals at its sequence: ALTERED there
    (receipts / "agent.jsonl").write_text(
        v2_store.receipt_line(env.collector_key, name, stream, 600, s.heads[0], now_ns()) + "\n",
        encoding="utf-8",
    )
    code, report = env.verify(name, "--receipts", str(receipts))
    assert code == 1
    assert ranges(report, label) == [("VALID", 1, 599), ("ALTERED", 600, 600), ("VALID", 601, 1200)]


def test_window_verifies_the_seals_whose_signed_time_range_meets_it(env: Env) -> None:
    """--from/--to on event time: the seals whose signed event-time range meets the window,
    their events in full; what lies outside (event 50 deleted) is not looked at."""
    name = f"window-{uuid.uuid4().hex[:6]}"
    stream = integrity.new_stream_id()
    s = v2_store.build_stream(name, stream, env.agent(name), 300, batch=100, start_time=RECENT)
    v2_store.store(env.client, env.prefix, s)
    _delete_events(env, name, stream, 50, 50)
    _delete_events(env, name, stream, 170, 170)

    def at(seq: int) -> str:
        return iso_nanos(RECENT + seq * 10**9)

    label = f"{name}:{stream}"
    code, report = env.verify(name, "--from", at(150), "--to", at(160))
    assert code == 1
    assert ranges(report, label) == [
        ("VALID", 101, 169),
        ("MISSING", 170, 170),
        ("VALID", 171, 200),
    ]
    code, report = env.verify(name, "--from", at(201), "--to", at(400))
    assert code == 0, json.dumps(report)
    assert ranges(report, label) == [("VALID", 201, 300)]
