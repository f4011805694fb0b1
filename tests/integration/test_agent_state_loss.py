"""An agent that lost its state (host reinstalled, disk replaced, state_dir deleted) and
was re-enrolled as docs/operations.md says: real agent and collector processes, real
mTLS, the session's OpenSearch, `crm-audit keys register` and `crm-audit verify` as an
operator runs them.

1,000 lines are shipped, the agent is stopped, its state directory deleted (its old log
file goes with the old host), a new signing key is created and registered (appended to
the agent's key file), and 1,000 new lines are shipped. The agent starts a new stream
(stream format 2): every line written must then be in OpenSearch exactly once, counted
by its content; the collector raises exactly one `agent_restarted_without_state` alert
and indexes nothing aside as a fork; `crm-audit verify` judges both streams VALID on
their own and reports the restart as a finding.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from collector.admin.pki import issue_agent
from tests.integration import support
from tests.integration.support import (
    SealingCollector,
    count_docs,
    run_verify,
    sealing_collector,
    search_hits,
    write_tailing_agent_config,
)
from tests.processes import BIN, ManagedProcess, wait_for

pytestmark = pytest.mark.integration

LINES = 1_000
RESTART_ALERT = "agent_restarted_without_state"


@dataclass(frozen=True)
class Env(SealingCollector):
    agent_id: str
    logs: Path
    agent_yaml: Path
    state: Path

    def count(self, index: str, *filters: dict[str, Any]) -> int:
        body = {"query": {"bool": {"filter": [{"term": {"agent.id": self.agent_id}}, *filters]}}}
        return count_docs(self.client, index, body)

    def events(self) -> list[dict[str, Any]]:
        return support.agent_docs(self.client, self.prefix, self.agent_id)

    def alerts(self, kind: str) -> list[dict[str, Any]]:
        self.refresh()
        body = {
            "size": 100,
            "query": {
                "bool": {
                    "filter": [
                        {"term": {"agent.id": self.agent_id}},
                        {"term": {"alert.kind": kind}},
                    ]
                }
            },
        }
        hits = search_hits(self.client, f"{self.prefix}-alerts", body)
        return [hit["_source"] for hit in hits]

    def start_agent(self, name: str) -> ManagedProcess:
        return ManagedProcess(
            ["crm-audit-agent", "run", "-c", str(self.agent_yaml)], self.root / f"{name}.log"
        )


@pytest.fixture(scope="module")
def env(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("state-loss")
    with sealing_collector(root, opensearch_url, "stateloss") as site:
        agent_id = f"crm-reinstalled-{uuid.uuid4().hex[:6]}"
        logs, state = root / "logs", root / "state"
        logs.mkdir()
        issued = issue_agent(site.pki, agent_id)
        agent_yaml = write_tailing_agent_config(
            root / "agent.yaml", site, agent_id, issued, state_dir=state, logs=logs
        )
        yield Env(**vars(site), agent_id=agent_id, logs=logs, agent_yaml=agent_yaml, state=state)


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, check=False, timeout=120
    )


def enroll(env: Env) -> str:
    return support.enroll(env.agent_yaml, env.keys, env.agent_id)


def write_lines(path: Path, tag: str, first: int, count: int) -> None:
    with path.open("ab") as out:
        for n in range(first, first + count):
            record = {"timestamp": 1772356500 + n, "event": "record.view", "n": n, "tag": tag}
            out.write(json.dumps(record).encode() + b"\n")


def line_numbers(docs: list[dict[str, Any]]) -> Counter[int]:
    """How often each written line (by its `n`) is stored."""
    return Counter(
        int(doc["crm"]["attributes"]["n"])
        for doc in docs
        if "n" in doc.get("crm", {}).get("attributes", {})
    )


def ship(env: Env, name: str, expected: int) -> None:
    """Run the agent until `expected` events of it are stored, then stop it cleanly."""
    agent = env.start_agent(name)
    try:
        wait_for(
            lambda: env.count(f"{env.prefix}-events-*") >= expected,
            f"{expected} events stored",
            timeout=180,
            watch=[agent, env.process],
        )
    finally:
        code = agent.stop()
    assert code == 0, agent.log()[-3000:]


def checkpointed(env: Env, stream: str, sequence: int) -> bool:
    """A checkpoint line attests `stream` at `sequence` (verify checks the signatures)."""
    for path in env.checkpoints.glob("checkpoints-*.jsonl"):
        for raw in path.read_bytes().splitlines():
            attested = json.loads(raw).get("streams", {}).get(f"{env.agent_id}:{stream}", {})
            if attested.get("sequence") == sequence:
                return True
    return False


def test_agent_state_loss_starts_a_new_stream_nothing_lost(env: Env) -> None:
    first_key = enroll(env)
    write_lines(env.logs / "old-host.jsonl", "before", 1, LINES)
    ship(env, "agent-1", LINES)

    # The host is reinstalled: state_dir (spool, checkpoint, stream id, signing key) is
    # gone and so is the old log file; the operator re-enrolls the agent.
    shutil.rmtree(env.state)
    (env.logs / "old-host.jsonl").rename(env.root / "old-host.jsonl.archived")
    second_key = enroll(env)
    assert second_key != first_key
    assert len((env.keys / f"{env.agent_id}.pub").read_text().split("END PUBLIC KEY")) == 3

    write_lines(env.logs / "new-host.jsonl", "after", LINES + 1, LINES)
    ship(env, "agent-2", 2 * LINES)

    # Every line written is stored exactly once, found by its content.
    docs = env.events()
    counts = line_numbers(docs)
    missing = sorted(set(range(1, 2 * LINES + 1)) - set(counts))
    twice = sorted(n for n, c in counts.items() if c > 1)
    assert not missing, f"{len(missing)} lines missing, e.g. {missing[:20]}"
    assert not twice, f"{len(twice)} lines stored more than once, e.g. {twice[:20]}"
    written = [doc for doc in docs if "n" in doc.get("crm", {}).get("attributes", {})]

    # Two streams, one per incarnation, each numbered from 1, ids naming their stream.
    streams: dict[str, set[int]] = {}
    for doc in written:
        stream = doc["agent"]["stream"]
        sequence = doc["event"]["sequence"]
        assert doc["_id"] == f"{env.agent_id}:{stream}:{sequence}"
        streams.setdefault(stream, set()).add(int(doc["crm"]["attributes"]["n"]))
    assert len(streams) == 2, sorted(streams)
    old, new = sorted(streams, key=lambda s: min(streams[s]))
    assert streams[old] == set(range(1, LINES + 1))
    assert streams[new] == set(range(LINES + 1, 2 * LINES + 1))
    assert {d["event"]["sequence"] for d in written if d["agent"]["stream"] == new} == set(
        range(1, LINES + 1)
    )

    # Exactly one restart alert, naming where the previous stream ended; nothing forked.
    alerts = env.alerts(RESTART_ALERT)
    assert len(alerts) == 1, alerts
    reason = alerts[0]["alert"]["reason"]
    assert f"agent {env.agent_id} restarted without state" in reason
    assert old in reason and f"sequence {LINES}" in reason
    assert env.alerts("fork") == []
    assert env.count(f"{env.prefix}-forks") == 0

    # verify: both streams VALID on their own, the restart reported as a finding.
    wait_for(
        lambda: checkpointed(env, new, LINES),
        f"a signed checkpoint of stream {new} at {LINES}",
        watch=[env.process],
    )
    code, report = run_verify(env.url, env.prefix, env.keys, env.checkpoints, env.agent_id)
    assert code == 1, report  # a restart is a finding: exit 1 (README, crm-audit verify)
    assert report["problems"] == []
    entries = {e["stream_id"]: e for e in report["agents"].values() if e["agent"] == env.agent_id}
    assert sorted(entries) == sorted([old, new]), sorted(report["agents"])
    judged = {
        stream: [(r["kind"], r["first"], r["last"]) for r in entry["ranges"]]
        for stream, entry in entries.items()
    }
    assert judged == {old: [("VALID", 1, LINES)], new: [("VALID", 1, LINES)]}
    assert entries[old]["stream"] == []
    assert entries[old]["valid"] is True
    (restart,) = entries[new]["stream"]
    assert restart["kind"] == "AGENT_RESTARTED"
    assert f"started stream {new} from its genesis" in restart["detail"]
    assert f"previous stream {old} ended at sequence {LINES}" in restart["detail"]

    # The receipts the real agent kept for its new stream anchor it outside the central
    # side: an attacker who truncates the stream's tail in OpenSearch (events, seals and
    # chain head rolled back to a seal boundary) and leaves no checkpoints hides it from
    # verify, but not from `verify --receipts` with the agent's export.
    receipts = env.root / "receipts"
    exported = run_cli(
        "crm-audit-agent", "receipts", "-c", str(env.agent_yaml), "--out", str(receipts)
    )
    assert exported.returncode == 0, exported.stderr
    assert (receipts / f"{env.agent_id}.receipts.jsonl").is_file()
    assert verify_new_stream(env, new, receipts) == [("VALID", 1, LINES)]

    cut = LINES - 100  # a seal boundary: the agent's batches are of 100
    truncate_tail(env, new, cut)
    assert verify_new_stream(env, new) == [("VALID", 1, cut)]  # invisible without anchors
    assert verify_new_stream(env, new, receipts) == [
        ("VALID", 1, cut),
        ("TAIL_TRUNCATED", cut + 1, LINES),
    ]


def delete_where(env: Env, index: str, *filters: dict[str, Any]) -> int:
    """What an attacker does without _delete_by_query (not in the integ-test zip)."""
    env.refresh()
    query = {"bool": {"filter": [{"term": {"agent.id": env.agent_id}}, *filters]}}
    hits = env.client.search(index=index, body={"query": query, "size": 10_000, "_source": False})
    for hit in hits["hits"]["hits"]:
        env.client.delete(index=hit["_index"], id=hit["_id"])
    env.refresh()
    return len(hits["hits"]["hits"])


def truncate_tail(env: Env, stream: str, last: int) -> None:
    """Delete `stream`'s events and seals after `last` and set its chain head back to the
    head the seal ending at `last` signed — all with OpenSearch write access only."""
    events = delete_where(
        env,
        f"{env.prefix}-events-*",
        {"term": {"agent.stream": stream}},
        {"range": {"event.sequence": {"gt": last}}},
    )
    assert events == LINES - last
    seals = f"{env.prefix}-seals"
    assert delete_where(
        env,
        seals,
        {"term": {"seal.stream": stream}},
        {"range": {"seal.last_sequence": {"gt": last}}},
    )
    query = {
        "bool": {
            "filter": [
                {"term": {"agent.id": env.agent_id}},
                {"term": {"seal.stream": stream}},
                {"term": {"seal.last_sequence": last}},
                {"range": {"seal.event_count": {"gt": 0}}},
            ]
        }
    }
    (kept,) = env.client.search(index=seals, body={"query": query})["hits"]["hits"]
    env.client.update(
        index=f"{env.prefix}-chainheads",
        id=f"{env.agent_id}:{stream}",
        body={"doc": {"chain": {"sequence": last, "head": kept["_source"]["seal"]["chain_head"]}}},
        params={"refresh": "true"},
    )


def verify_new_stream(
    env: Env, stream: str, receipts: Path | None = None
) -> list[tuple[str, int, int]]:
    """`crm-audit verify` without checkpoints (the attacker removed them), optionally with
    the agent's exported receipts: the ranges it gives `stream`."""
    argv = [
        "crm-audit", "verify", "--opensearch", env.url, "--prefix", env.prefix,
        "--keys", str(env.keys), "--checkpoint-key",
        str(env.checkpoints / "collector-signing-key.pub"), "--agent", env.agent_id,
        "--format", "json",
    ]  # fmt: skip
    if receipts is not None:
        argv += ["--receipts", str(receipts)]
    env.refresh()
    done = run_cli(*argv)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    entry = report["agents"][f"{env.agent_id}:{stream}"]
    return [(r["kind"], r["first"], r["last"]) for r in entry["ranges"]]
