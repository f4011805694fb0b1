"""`crm-audit report` on stream format 2 against a real OpenSearch and the real command:
coverage lists every chain (one per stream, labelled ``agent:stream`` as verify labels
it) with the restart that began a new stream, beside an agent still on format 1.

Data (2026-11-02), written as the storage contract says the collector writes it
(`tests.integration.v2_store`):

- agent ``rs-restart``: stream A (120 events), then, after a restart without state,
  stream B (70 events) under a re-enrolled key; B's chain head records A and its last
  sequence, and the collector's restart alert names B.
- agent ``rs-v1``: only a format 1 chain head (``_id`` = agent) with its sequence.

Trust roots are taken as verify takes them: the collector key from ``--keys`` or
``--checkpoint-key``, never from a ``*.pub`` lying in the checkpoint directory.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opensearchpy import OpenSearch

from collector.checkpoints import CheckpointFile
from collector.documents import iso_nanos
from collector.gate import (
    ALERTS_MAPPING,
    alert_request,
    alerts_index,
    chainheads_index,
    restart_finding,
)
from collector.retention_job.records import RecordFile
from proto import integrity
from tests.integration import v2_store
from tests.integration.support import drop_prefix
from tests.integration.test_report import Tables, number
from tests.processes import BIN

pytestmark = pytest.mark.integration

DAY = 86_400 * 10**9
START = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp()) * 10**9


@dataclass
class Env:
    root: Path
    url: str
    prefix: str
    client: OpenSearch
    keys: Path
    first: str
    second: str


@pytest.fixture(scope="module")
def env(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("report-streams")
    keys = root / "keys"
    keys.mkdir()
    prefix = f"rptv2-{uuid.uuid4().hex[:8]}"
    client = OpenSearch(hosts=[opensearch_url], timeout=60)
    v2_store.create_indices(client, prefix, [v2_store.month_index(prefix, START)])
    client.indices.create(index=alerts_index(prefix), body={"mappings": ALERTS_MAPPING})
    try:
        agent = "rs-restart"
        old_key, new_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        (keys / f"{agent}.pub").write_bytes(  # both keys: rotation history
            integrity.public_key_pem(old_key.public_key())
            + integrity.public_key_pem(new_key.public_key())
        )
        v2_store.write_public_key(keys / "rs-v1.pub", Ed25519PrivateKey.generate())
        first, second = integrity.new_stream_id(), integrity.new_stream_id()
        old = v2_store.build_stream(agent, first, old_key, 120, batch=50, start_time=START)
        new = v2_store.build_stream(
            agent, second, new_key, 70, batch=50, start_time=START + DAY // 4
        )
        v2_store.store(client, prefix, old)
        v2_store.store(client, prefix, new)
        # What the collector records about each stream in its chain head.
        heads = chainheads_index(prefix)
        client.update(
            index=heads,
            id=f"{agent}:{first}",
            body={"doc": {"chain": {"first_seen": iso_nanos(START + 10**9)}}},
        )
        client.update(
            index=heads,
            id=f"{agent}:{second}",
            body={
                "doc": {
                    "chain": {
                        "first_seen": iso_nanos(START + DAY // 4 + 10**9),
                        "previous_stream": first,
                        "previous_sequence": 120,
                    }
                }
            },
        )
        alert = alert_request(
            prefix,
            agent,
            restart_finding(agent, new.seals[0], (first, 120), START + DAY // 4),
            now_unix_nano=START + DAY // 4 + 2 * 10**9,
            batch_id=1,
            peer="ipv4:127.0.0.1:5000",
            stream_id=second,
        )
        client.index(index=alert.index, id=alert.doc_id, body=alert.source)
        # A format 1 agent: its one chain head is labelled by the agent alone.
        client.index(
            index=heads,
            id="rs-v1",
            body={
                "@timestamp": iso_nanos(START),
                "agent": {"id": "rs-v1"},
                "chain": {"sequence": 42, "head": "00" * 32, "key_id": "k"},
            },
        )
        client.indices.refresh(index=f"{prefix}-*")
        yield Env(root, opensearch_url, prefix, client, keys, first, second)
    finally:
        drop_prefix(client, prefix)


def report(env: Env, *extra: str, keys: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "crm-audit"),
            "report",
            "--opensearch",
            env.url,
            "--prefix",
            env.prefix,
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-03",
            "--out",
            str(env.root / "report.html"),
            "--keys",
            str(keys or env.keys),
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def tables_of(env: Env) -> dict[str, list[list[str]]]:
    out = env.root / "report.html"
    parser = Tables()
    parser.feed(out.read_text(encoding="utf-8"))
    return parser.tables


def test_coverage_has_one_row_per_stream_with_the_restart(env: Env) -> None:
    done = report(env)
    assert done.returncode == 0, done.stderr
    tables = tables_of(env)
    a, b = f"rs-restart:{env.first}", f"rs-restart:{env.second}"
    header, *rows = tables["streams"]
    streams = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert list(streams) == [a, b, "rs-v1"]  # per agent, in the order the streams began
    assert [streams[a]["Format"], streams[b]["Format"], streams["rs-v1"]["Format"]] == [
        "2",
        "2",
        "1",
    ]
    assert number(streams[a]["Events"]) == 120 and number(streams[b]["Events"]) == 70
    assert number(streams[a]["Seals"]) == 3 and number(streams[b]["Seals"]) == 2
    assert number(streams[a]["Chain head seq."]) == 120
    assert number(streams[b]["Chain head seq."]) == 70
    assert number(streams["rs-v1"]["Chain head seq."]) == 42
    assert streams[a]["Follows"] == "-"
    assert streams[b]["Follows"] == f"RESTART without state after {a} at 120"
    assert streams[b]["First seen"].startswith("2026-11-02 06:00")
    agents = {row[0]: row for row in tables["agents"][1:]}
    assert agents["rs-restart"][-1] == "2 (1 RESTART(S))"
    assert agents["rs-v1"][-1] == "1"
    assert number(agents["rs-restart"][3]) == 190
    # The integrity section names the same chains, and says what it found about each
    # stream as a whole as verify does: the restart, and the registered agent with
    # nothing in the period.
    verified = {row[0]: row for row in tables["verify"][1:]}
    assert {a, b, "rs-v1"} <= set(verified)
    assert verified["rs-v1"][1] == "FINDINGS" and number(verified["rs-v1"][-1]) == 1
    stream_findings = {(row[0], row[1]) for row in tables["findings"][1:] if row[2] == "-"}
    assert stream_findings == {(b, "AGENT_RESTARTED"), ("rs-v1", "MISSING_STREAM")}


def test_trust_roots_are_pinned_as_verify_pins_them(env: Env) -> None:
    """A writer of the checkpoint directory plants their own key there with a checkpoint
    and a retention record signed by it: the report trusts neither (the collector key
    comes from --keys, as verify takes it), says so, and without a pinned key refuses
    --checkpoints with one line (exit 2). ``collector.pub`` in --keys is no agent."""
    collector_key = Ed25519PrivateKey.generate()
    attacker = Ed25519PrivateKey.generate()
    keys = env.root / "pinned-keys"
    shutil.copytree(env.keys, keys)
    v2_store.write_public_key(keys / "collector.pub", collector_key)
    checkpoints = env.root / "checkpoints"
    label = ("rs-restart", env.second)
    CheckpointFile(checkpoints, collector_key).append(
        {label: (70, b"\x01" * 32)}, now_unix_nano=START + DAY // 2
    )
    # the attacker's line: a forged head far ahead, and their key beside it
    CheckpointFile(checkpoints, attacker).append(
        {label: (9_999, b"\x02" * 32)}, now_unix_nano=START + DAY // 2
    )
    v2_store.write_public_key(checkpoints / "attacker.pub", attacker)
    RecordFile(checkpoints, attacker).append(
        {
            "action": "delete",
            "class": "standard",
            "index": f"{env.prefix}-events-standard-2026.10",
            "events": {"newest": iso_nanos(START)},
            "deleted_by": {"enforcer": "collector"},
            "agents": {},
        },
        now_unix_nano=START + DAY,
    )

    refused = report(env, "--checkpoints", str(checkpoints))  # no collector key pinned
    assert refused.returncode == 2
    assert "a *.pub in the checkpoint directory is not trusted" in refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr

    done = report(env, "--checkpoints", str(checkpoints), keys=keys)
    assert done.returncode == 0, done.stderr
    tables = tables_of(env)
    attested = {row[0]: row[1] for row in tables["checkpoints"][1:]}
    assert attested == {f"rs-restart:{env.second}": "70"}  # the forged 9,999 is not
    html = (env.root / "report.html").read_text(encoding="utf-8")
    assert "signed by an unknown collector key" in html  # the attacker's checkpoint line
    assert "retention record signed by an unknown collector key" in html
    assert tables["deletions"][1:] == [["none"]]  # the forged record is no deletion
    assert "collector" not in {row[0] for row in tables["agents"][1:]}

    # The same key as --checkpoint-key (no collector.pub in --keys) is trusted alike.
    pub = env.root / "collector-signing-key.pub"
    v2_store.write_public_key(pub, collector_key)
    done = report(env, "--checkpoints", str(checkpoints), "--checkpoint-key", str(pub))
    assert done.returncode == 0, done.stderr
    attested = {row[0]: row[1] for row in tables_of(env)["checkpoints"][1:]}
    assert attested == {f"rs-restart:{env.second}": "70"}
