"""The collector's retention job on a real OpenSearch node without ISM.

Signed, hash-chained batches with event times 1, 13, 30 and 90 months old go through a
real collector (mTLS gRPC) into a class that goes read-only after 12 months and is
deleted after 24 (minimum 23 months). `crm-audit-collector retention run` then makes
exactly the 13-month index read-only and deletes exactly the 30-month one; the held
90-month index stays until its hold is released and goes on the next run. The retention
records are signed and hash-linked, `crm-audit verify` says EXPIRED for what they cover
and MISSING for an index deleted by hand. Two collectors running the job every second
delete an index once, with one record, and neither deletes while another holds the lease.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from agent.sealing import PUBLIC_KEY_FILE, AgentKey, Chainer, seal
from collector.admin.pki import init_ca, issue_agent
from collector.index import Requester
from collector.keys import register_key
from collector.retention_job.records import RetentionRecords, read_record_files
from proto import integrity
from proto.v1 import audit_pb2 as pb
from proto.v1 import audit_pb2_grpc as pb_grpc
from tests.collector import conftest as collector_fixtures
from tests.collector.conftest import make_event, refresh
from tests.helpers import free_port
from tests.integration.support import ranges, run_verify, verify_json
from tests.integration.test_collector_ingest import metric, scrape
from tests.integration.test_report import Tables
from tests.processes import BIN, ManagedProcess, wait_for

pytestmark = pytest.mark.integration

os_url = collector_fixtures.os_url
os_http = collector_fixtures.os_http
prefix = collector_fixtures.prefix
ism_available = collector_fixtures.ism_available

DAY_NS = 86_400 * 1_000_000_000
MONTH_NS = int(30.44 * DAY_NS)
POLICY = {
    "policy": {
        "description": "test: warm after 12 months, deleted after 24 (by event time)",
        "default_state": "hot",
        "states": [
            {
                "name": "hot",
                "actions": [],
                "transitions": [{"state_name": "warm", "conditions": {"min_index_age": "365d"}}],
            },
            {
                "name": "warm",
                "actions": [{"read_only": {}}, {"force_merge": {"max_num_segments": 1}}],
                "transitions": [{"state_name": "delete", "conditions": {"min_index_age": "730d"}}],
            },
            {"name": "delete", "actions": [{"delete": {}}], "transitions": []},
        ],
    }
}


def index_month(unix_nano: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(unix_nano / 1e9, dt.UTC).strftime("%Y.%m")


@dataclass
class Site:
    root: Path
    pki: Path
    keys: Path
    checkpoints: Path
    config: Path
    prefix: str
    url: str
    http: Requester

    def index(self, months_old: float, now: int) -> str:
        return f"{self.prefix}-events-standard-{index_month(now - int(months_old * MONTH_NS))}"


def write_site(root: Path, prefix: str, url: str, http: Requester, **retention: Any) -> Site:
    pki = root / "pki"
    init_ca(pki)
    keys, checkpoints = root / "keys", root / "checkpoints"
    keys.mkdir()
    (root / "ism-standard.json").write_text(json.dumps(POLICY))
    data = {
        "listen": f"127.0.0.1:{free_port()}",
        "tls": {
            "ca": str(pki / "ca.crt"),
            "cert": str(pki / "collector.crt"),
            "key": str(pki / "collector.key"),
        },
        "opensearch": {"url": url, "index_prefix": prefix, "replicas": 0},
        "retention": {
            "default_class": "standard",
            "classes": {"standard": {"policy": "ism-standard.json", "minimum_days": 700}},
            **retention,
        },
        "integrity": {
            "keys_dir": "keys",
            "checkpoint_dir": "checkpoints",
            "checkpoint_interval_s": 1,
        },
    }
    config = root / "collector.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return Site(root, pki, keys, checkpoints, config, prefix, url, http)


class Agent:
    """An agent's integrity hooks (sequence, chain, seal) driven by hand."""

    def __init__(self, site: Site, name: str) -> None:
        self.site = site
        self.name = name
        state = site.root / f"state-{name}"
        issued = issue_agent(site.pki, name)
        self.cert, self.key_path = issued.cert, issued.key
        self.key = AgentKey.load_or_create(state)
        self.chainer = Chainer.load(state, name)
        register_key(site.keys, name, (state / PUBLIC_KEY_FILE).read_bytes())
        self.next_sequence = 1
        self.batch_id = 0

    def send(self, port: int, count: int, time_unix_nano: int) -> tuple[int, int]:
        """One sealed batch of `count` events at `time_unix_nano`; its sequence range."""
        first = self.next_sequence
        events = []
        for _ in range(count):
            event = make_event(self.next_sequence, self.name, time_unix_nano=time_unix_nano)
            self.next_sequence += 1
            self.chainer.link(event)
            events.append(event)
        self.batch_id += 1
        batch = pb.Batch(batch_id=self.batch_id, agent_id=self.name, events=events)
        seal(batch, self.key, now_unix_nano=time_unix_nano)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(self.site.pki / "ca.crt").read_bytes(),
            private_key=self.key_path.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            [ack] = list(pb_grpc.CollectorStub(channel).Ship(iter([batch]), timeout=60))
        assert ack.status == pb.Ack.STATUS_OK, ack
        return first, self.next_sequence - 1


def collector_port(config: Path) -> int:
    return int(yaml.safe_load(config.read_text())["listen"].rsplit(":", 1)[1])


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "crm-audit-collector"), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def verify(site: Site, agent: str) -> list[tuple[str, int, int]]:
    refresh(site.http, f"{site.prefix}-*")
    _, report = run_verify(site.url, site.prefix, site.keys, site.checkpoints, agent)
    assert report["problems"] == [], report["problems"]
    return ranges(report, agent)


def started(proc: ManagedProcess) -> bool:
    return "collector listening" in proc.log()


def exists(http: Requester, index: str) -> bool:
    return http("HEAD", f"/{index}").status == 200


def write_blocked(http: Requester, index: str) -> bool:
    got = http("GET", f"/{index}/_settings", params={"flat_settings": "true"})
    return bool(got.body[index]["settings"].get("index.blocks.write") == "true")


def segments(http: Requester, index: str) -> int:
    got = http("GET", f"/_cat/segments/{index}", params={"format": "json"})
    return len({(row["shard"], row["segment"]) for row in got.body if row["prirep"] == "p"})


def records_in_index(site: Site) -> list[dict[str, Any]]:
    refresh(site.http, f"{site.prefix}-retention")
    got = site.http("POST", f"/{site.prefix}-retention/_search", body={"size": 100})
    return [h["_source"]["retention"] for h in got.body["hits"]["hits"]]


def file_records(site: Site) -> RetentionRecords:
    keys = {
        integrity.key_id(k): k
        for pub in site.checkpoints.glob("*.pub")
        for k in integrity.load_public_keys(pub.read_bytes())
    }
    out = RetentionRecords()
    read_record_files(site.checkpoints, keys, out)
    return out


@pytest.fixture
def cleanup(os_http: Requester) -> Iterator[list[str]]:
    prefixes: list[str] = []
    yield prefixes
    for p in prefixes:
        os_http("DELETE", f"/{p}-*", params={"expand_wildcards": "all"})
        for template in ("events", "batches", "deadletter"):
            os_http("DELETE", f"/_index_template/{p}-{template}")


def test_phases_by_event_time_hold_evidence_and_verify(
    tmp_path: Path, os_url: str, os_http: Requester, prefix: str
) -> None:
    import time

    site = write_site(tmp_path, prefix, os_url, os_http)
    collector = ManagedProcess(
        [str(BIN / "crm-audit-collector"), "run", "-c", str(site.config)], tmp_path / "c.log"
    )
    now = time.time_ns()
    try:
        wait_for(lambda: "collector listening" in collector.log(), "start", watch=[collector])
        port = collector_port(site.config)
        a = Agent(site, "agent-a")
        ranges = {m: a.send(port, 10, now - int(m * MONTH_NS)) for m in (1, 13, 30, 90)}
        b = Agent(site, "agent-b")
        b.send(port, 5, now - 20 * MONTH_NS)  # this index is deleted by hand below
        wait_for(
            lambda: any(site.checkpoints.glob("checkpoints-*.jsonl")),
            "a checkpoint",
            watch=[collector],
        )
    finally:
        assert collector.stop() == 0
    refresh(os_http, f"{prefix}-*")
    one, thirteen, thirty, ninety = (site.index(m, now) for m in (1, 13, 30, 90))
    by_hand = site.index(20, now)

    # The config check refuses a minimum above the policy's delete age, naming the key.
    strict = yaml.safe_load(site.config.read_text())
    strict["retention"]["classes"]["standard"]["minimum_days"] = 2555
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(strict))
    refused = cli("check", "-c", str(bad))
    assert refused.returncode == 2
    assert "retention.classes.standard.minimum_days" in refused.stderr
    assert "deletes after 730 days" in refused.stderr

    held = cli(
        "hold",
        "place",
        "--class",
        "standard",
        "--from",
        ninety[-7:],
        "--to",
        ninety[-7:],
        "--reason",
        "inquiry",
        "-c",
        str(site.config),
    )
    assert held.returncode == 0, held.stderr
    hold_id = held.stdout.split()[1]

    status = cli("retention", "status", "-c", str(site.config))
    assert status.returncode == 0, status.stderr
    assert "enforcer: collector (auto: no ISM plugin)" in status.stdout
    lines = {line.split("\t")[0].strip(): line for line in status.stdout.splitlines()}
    assert "\thot\tread-only + force-merge\t" in lines[one]
    assert "(due)" not in lines[one]
    assert "read-only + force-merge" in lines[thirteen] and "(due)" in lines[thirteen]
    assert "\tdelete\t" in lines[thirty] and "(due)" in lines[thirty]
    assert "held" in lines[ninety] and f"hold {hold_id}" in lines[ninety]

    dry = cli("retention", "run", "--dry-run", "-c", str(site.config))
    assert dry.returncode == 0, dry.stderr
    assert f"would {thirty}: delete" in dry.stdout
    assert all(exists(os_http, i) for i in (one, thirteen, thirty, ninety, by_hand))
    assert not any(site.checkpoints.glob("retention-*.jsonl"))

    ran = cli("retention", "run", "-c", str(site.config))
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert exists(os_http, one) and not write_blocked(os_http, one)
    assert exists(os_http, thirteen) and write_blocked(os_http, thirteen)
    assert segments(os_http, thirteen) == 1
    assert not exists(os_http, thirty)
    assert exists(os_http, ninety)  # held
    assert f"kept: {ninety}: delete due, kept: legal hold" in ran.stdout
    # The 20-month index is warm now (read-only), not deleted; an operator deletes it.
    assert exists(os_http, by_hand) and write_blocked(os_http, by_hand)
    assert os_http("DELETE", f"/{by_hand}").status == 200

    released = cli("hold", "release", "--id", hold_id, "--reason", "closed", "-c", str(site.config))
    assert released.returncode == 0, released.stderr
    again = cli("retention", "run", "-c", str(site.config))
    assert again.returncode == 0, again.stderr
    assert not exists(os_http, ninety)
    assert exists(os_http, one) and exists(os_http, thirteen)
    third = cli("retention", "run", "-c", str(site.config))
    assert third.returncode == 0 and "nothing due" in third.stdout

    # Evidence: one signed, linked record per deletion, in the file and in the index.
    records = file_records(site)
    assert records.problems == []
    assert sorted(r.index for r in records.records) == sorted([thirty, ninety])
    by_index = {r.index: r for r in records.records}
    assert by_index[thirty].runs("agent-a") == [ranges[30]]
    assert by_index[ninety].runs("agent-a") == [ranges[90]]
    assert by_index[thirty].body["events"]["count"] == 10
    assert by_index[thirty].body["deleted_by"]["enforcer"] == "collector"
    assert by_index[thirty].body["agents"]["agent-a"]["seals"] == [list(ranges[30])]
    assert "delete after 730d" in by_index[thirty].body["policy"]["rule"]
    indexed = records_in_index(site)
    assert sorted(r["index"] for r in indexed) == sorted([thirty, ninety])
    lines_in_file = next(site.checkpoints.glob("retention-*.jsonl")).read_text().splitlines()
    assert sorted(r["raw"] for r in indexed) == sorted(lines_in_file)

    # verify: EXPIRED exactly for the recorded ranges, MISSING for the hand-deleted index.
    assert verify(site, "agent-a") == [
        ("VALID", ranges[1][0], ranges[13][1]),
        ("EXPIRED", *ranges[30]),
        ("EXPIRED", *ranges[90]),
    ]
    assert verify(site, "agent-b") == [("MISSING", 1, 5)]

    # The compliance report's retention section: enforced by the job, the signed deletions.
    import datetime as dt

    out = tmp_path / "report.html"
    today = dt.datetime.now(dt.UTC).date()
    made = subprocess.run(
        [
            str(BIN / "crm-audit"),
            "report",
            "--opensearch",
            site.url,
            "--prefix",
            site.prefix,
            "--from",
            str(today - dt.timedelta(days=60)),
            "--to",
            str(today + dt.timedelta(days=1)),
            "--out",
            str(out),
            "--keys",
            str(site.keys),
            "--checkpoints",
            str(site.checkpoints),
            "--checkpoint-key",
            str(site.checkpoints / "collector-signing-key.pub"),
            "--policies",
            str(site.root),
            "--min-retention-days",
            "700",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert made.returncode == 0, made.stderr
    tables = Tables()
    tables.feed(out.read_text(encoding="utf-8"))
    [row] = tables.tables["retention"][1:]
    assert row[2].startswith("enforced by the collector's retention job (last run ")
    assert row[3] == "730 days" and row[-1] == "MEETS"
    deletions = {r[1]: r for r in tables.tables["deletions"][1:]}
    assert sorted(deletions) == sorted([thirty, ninety])
    assert deletions[thirty][3].startswith("collector (cli:")
    assert deletions[thirty][5] == "10" and deletions[thirty][6] == "1"

    # A forged record (edited after signing) is a problem, and covers nothing.
    path = next(site.checkpoints.glob("retention-*.jsonl"))
    text = path.read_text()
    path.write_text(text.replace('"count":10', '"count":11', 1))
    tampered = file_records(site)
    assert any("signature does not verify" in p for p in tampered.problems)


def test_two_collectors_one_deletion_one_record(
    tmp_path: Path, os_url: str, os_http: Requester, prefix: str
) -> None:
    import time

    site = write_site(tmp_path, prefix, os_url, os_http, interval_s=1, lease_ttl_s=30)
    now = time.time_ns()
    lease = f"/{prefix}-leases/_doc/retention"
    second_config = tmp_path / "collector-2.yaml"
    data = yaml.safe_load(site.config.read_text())
    metrics_ports = [free_port(), free_port()]
    data["metrics"] = {"listen": f"127.0.0.1:{metrics_ports[0]}"}
    site.config.write_text(yaml.safe_dump(data))
    data["listen"] = f"127.0.0.1:{free_port()}"
    data["metrics"] = {"listen": f"127.0.0.1:{metrics_ports[1]}"}
    second_config.write_text(yaml.safe_dump(data))
    both: list[ManagedProcess] = []
    try:
        # one after the other: the first creates the collector key both sign with
        for n, config in (("1", site.config), ("2", second_config)):
            both.append(
                ManagedProcess(
                    [str(BIN / "crm-audit-collector"), "run", "-c", str(config)],
                    tmp_path / f"{n}.log",
                )
            )
            wait_for(partial(started, both[-1]), "start", watch=both)
        wait_for(lambda: os_http("GET", lease).status == 200, "a first run", watch=both)
        # Someone else holds the job's lease: neither collector may run it meanwhile.
        taken = os_http(
            "PUT",
            lease,
            body={
                "@timestamp": "2026-01-01T00:00:00.000000000Z",
                "lease": {
                    "name": "retention",
                    "holder": "test",
                    "expires": "2200-01-01T00:00:00.000000000Z",
                },
            },
            params={"refresh": "true"},
        )
        assert taken.status in (200, 201), taken.body
        agent = Agent(site, "agent-a")
        agent.send(collector_port(site.config), 10, now - 30 * MONTH_NS)
        old = site.index(30, now)
        marks = [len(p.log()) for p in both]
        wait_for(
            lambda: all(
                "another collector holds the retention lease" in p.log()[mark:]
                for p, mark in zip(both, marks, strict=True)
            ),
            "both collectors skipping the held lease",
            watch=both,
        )
        assert exists(os_http, old)
        assert os_http("DELETE", lease).status == 200
        wait_for(lambda: not exists(os_http, old), "the deletion", watch=both)
        # Let both run several more rounds: nothing may be recorded or deleted twice.
        time.sleep(4)
        scraped = [scrape(port, "/metrics")[1] for port in metrics_ports]
        deleted = [
            metric(text, "crm_audit_collector_retention_indices_deleted_total", 'class="standard"')
            if "retention_indices_deleted_total{" in text
            else 0.0
            for text in scraped
        ]
        assert sorted(deleted) == [0.0, 1.0]
        # the oldest event left is none (the only index is gone): no age for the class
        assert "retention_oldest_event_age_seconds{" not in "".join(scraped)
    finally:
        for proc in both:
            proc.stop()
    assert [r["index"] for r in records_in_index(site)] == [old]
    records = file_records(site)
    assert records.problems == [] and [r.index for r in records.records] == [old]
    deleted_in = [p.log_path.name for p in both if f"retention: {old}: delete" in p.log()]
    assert len(deleted_in) == 1, [p.log()[-3000:] for p in both]


def test_ism_cluster_policies_installed_enforcer_off(
    tmp_path: Path, os_url: str, os_http: Requester, prefix: str, ism_available: bool
) -> None:
    """Where the cluster has ISM: policies installed, the collector job changes nothing,
    and an index deleted by hand (no delete in ISM's history) gets no record."""
    if not ism_available:
        pytest.skip(reason="ISM plugin not installed on the test cluster (set OPENSEARCH_URL)")
    import time

    site = write_site(tmp_path, prefix, os_url, os_http)
    setup = cli("setup", "-c", str(site.config))
    assert setup.returncode == 0, setup.stderr
    assert os_http("GET", f"/_plugins/_ism/policies/{prefix}-standard").status == 200
    collector = ManagedProcess(
        [str(BIN / "crm-audit-collector"), "run", "-c", str(site.config)], tmp_path / "c.log"
    )
    now = time.time_ns()
    try:
        wait_for(partial(started, collector), "start", watch=[collector])
        agent = Agent(site, "agent-a")
        agent.send(collector_port(site.config), 5, now - 30 * MONTH_NS)
        agent.send(collector_port(site.config), 5, now - 40 * MONTH_NS)
    finally:
        assert collector.stop() == 0
    thirty, forty = site.index(30, now), site.index(40, now)
    status = cli("retention", "status", "-c", str(site.config))
    assert "enforcer: ism (auto: ISM on every node)" in status.stdout, status.stderr
    ran = cli("retention", "run", "-c", str(site.config))
    assert ran.returncode == 0, ran.stderr
    assert exists(os_http, thirty) and exists(os_http, forty)  # the job deleted nothing
    assert os_http("DELETE", f"/{forty}").status == 200
    ran = cli("retention", "run", "-c", str(site.config))
    assert f"{forty}: gone, but ISM's history has no delete of it" in ran.stdout
    assert not list(site.checkpoints.glob("retention-*.jsonl"))


def test_real_agent_old_jsonlines_expire_by_event_time(
    tmp_path: Path, os_url: str, os_http: Requester, prefix: str
) -> None:
    """A real agent tails jsonlines whose timestamps are 30 months and 1 month old; the
    job deletes the old month with a record, and verify says EXPIRED / VALID."""
    import datetime as dt
    import re

    from collector.admin.sample import generate, write_jsonl
    from tests.integration.support import agent_config_head

    site = write_site(tmp_path, prefix, os_url, os_http)
    issued = issue_agent(site.pki, "crm-1")
    (tmp_path / "logs").mkdir()
    agent_yaml = tmp_path / "agent.yaml"
    agent_yaml.write_text(
        agent_config_head(
            agent_id="crm-1",
            state_dir="agent-state",
            port=collector_port(site.config),
            ca=site.pki / "ca.crt",
            cert=issued.cert,
            key=issued.key,
            max_events=50,
        )
        + 'sources:\n  - {name: crm_app, format: jsonlines, paths: ["logs/*.jsonl"], '
        "poll_interval_s: 0.1}\n",
        encoding="utf-8",
    )
    made = subprocess.run(
        [str(BIN / "crm-audit-agent"), "key", "-c", str(agent_yaml)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    public = Path(re.search(r"^public key: (.+)$", made.stdout, re.M).group(1))  # type: ignore[union-attr]
    register_key(site.keys, "crm-1", public.read_bytes())
    log = tmp_path / "logs" / "crm.jsonl"
    now = dt.datetime.now(dt.UTC)
    old_start = now - dt.timedelta(days=30 * 30.44)
    young_start = now - dt.timedelta(days=30)

    def indexed() -> int:
        refresh(os_http, f"{prefix}-events-*")
        got = os_http("GET", f"/{prefix}-events-*/_count", params={"ignore_unavailable": "true"})
        return int(got.body.get("count", 0)) if got.status == 200 else 0

    collector = ManagedProcess(
        [str(BIN / "crm-audit-collector"), "run", "-c", str(site.config)], tmp_path / "c.log"
    )
    agent: ManagedProcess | None = None
    try:
        wait_for(partial(started, collector), "start", watch=[collector])
        agent = ManagedProcess(
            [str(BIN / "crm-audit-agent"), "run", "-c", str(agent_yaml)], tmp_path / "a.log"
        )
        old_count = write_jsonl(log, generate(20, 3, old_start, suspicious=False))
        wait_for(lambda: indexed() == old_count, "the old lines", watch=[collector, agent])
        young = write_jsonl(log, generate(20, 4, young_start, suspicious=False), append=True)
        wait_for(lambda: indexed() == old_count + young, "all lines", watch=[collector, agent])
    finally:
        if agent is not None:
            agent.stop()
        assert collector.stop() == 0
    old_index = f"{prefix}-events-standard-{old_start:%Y.%m}"
    young_index = f"{prefix}-events-standard-{young_start:%Y.%m}"
    assert exists(os_http, old_index) and exists(os_http, young_index)
    ran = cli("retention", "run", "-c", str(site.config))
    assert ran.returncode == 0, ran.stderr
    assert f"{old_index}: delete" in ran.stdout
    assert not exists(os_http, old_index) and exists(os_http, young_index)
    [record] = file_records(site).records
    # the agent writes stream format 2: the record names its one stream
    [stream] = record.body["streams"].values()
    assert stream["agent"] == "crm-1" and record.body["agents"] == {}
    assert record.index == old_index
    assert record.runs("crm-1", stream["stream"]) == [(1, old_count)]
    found = verify(site, "crm-1")
    assert found[0] == ("EXPIRED", 1, old_count)
    assert found[1:] == [("VALID", old_count + 1, old_count + young)]


def test_v2_retention_records_name_the_stream(
    tmp_path: Path, os_url: str, os_http: Requester, prefix: str
) -> None:
    """Stream format 2: an agent's stream A and, after a restart without state, stream
    B, both with events 30 months old in one index; B's sequences 1-5 were deleted by
    hand before the retention job deleted the index. The signed record lists the runs
    stored per stream (A 1-20, B 6-20), so verify says EXPIRED for A 1-20 and B 6-20 and
    MISSING for B 1-5: a per-agent record (A's 1-20) would have called them EXPIRED."""
    import datetime as dt
    import time

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from opensearchpy import OpenSearch

    from tests.integration import v2_store

    site = write_site(tmp_path, prefix, os_url, os_http)
    old = dt.datetime.fromtimestamp((time.time_ns() - 30 * MONTH_NS) / 1e9, dt.UTC)
    start = int(old.replace(day=10, hour=12).timestamp()) * 10**9  # far from a month's edge
    agent = "v2-retained"
    key = Ed25519PrivateKey.generate()
    v2_store.write_public_key(site.keys / f"{agent}.pub", key)
    first, second = integrity.new_stream_id(), integrity.new_stream_id()
    a = v2_store.build_stream(agent, first, key, 20, batch=10, start_time=start)
    b = v2_store.build_stream(agent, second, key, 20, batch=10, start_time=start + 3600 * 10**9)
    index = v2_store.month_index(prefix, start)
    client = OpenSearch(hosts=[os_url], timeout=60)
    try:
        v2_store.create_indices(client, prefix, [index])
        v2_store.store(client, prefix, a)
        v2_store.store(client, prefix, b)

        client.indices.refresh(index=f"{prefix}-*")
        for seq in range(1, 6):  # lost before retention (no _delete_by_query here)
            client.delete(index=index, id=f"{agent}:{second}:{seq}")
        client.indices.refresh(index=f"{prefix}-*")
    finally:
        client.close()

    ran = cli("retention", "run", "-c", str(site.config))
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert not exists(os_http, index)
    records = file_records(site)
    assert records.problems == []
    [record] = records.records
    assert record.body["agents"] == {}  # no format 1 history in the index
    assert set(record.body["streams"]) == {f"{agent}:{first}", f"{agent}:{second}"}
    assert record.runs(agent, first) == [(1, 20)] and record.runs(agent, second) == [(6, 20)]
    assert record.body["streams"][f"{agent}:{second}"]["seals"] == [[1, 20]]
    assert record.runs(agent) == [] and record.agents == {agent}
    [indexed] = records_in_index(site)
    assert indexed["agents"] == [agent]

    refresh(os_http, f"{prefix}-*")
    pub = site.checkpoints / "collector-signing-key.pub"
    code, report = verify_json(
        site.url,
        prefix,
        "--keys",
        str(site.keys),
        "--checkpoint-key",
        str(pub),
        "--agent",
        agent,
    )
    assert code == 1  # MISSING, and the restart
    assert report["problems"] == []
    got = {
        label: [(r["kind"], r["first"], r["last"]) for r in entry["ranges"]]
        for label, entry in report["agents"].items()
    }
    assert got == {
        f"{agent}:{first}": [("EXPIRED", 1, 20)],
        f"{agent}:{second}": [("MISSING", 1, 5), ("EXPIRED", 6, 20)],
    }


def test_batches_indices_go_with_their_events_index_and_alone_by_period(
    tmp_path: Path, os_url: str, os_http: Requester, prefix: str, ism_available: bool
) -> None:
    """A format 2 stream 30 months old with its batches index (written under the
    installed batches template), and two batches indices without events: 40 months and 1
    month old. One run deletes the events index and its batches index under one record
    naming both, and the 40-month batches index under a record of its own; the 1-month
    one stays. verify still says EXPIRED for the stream."""
    import datetime as dt
    import time

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from opensearchpy import OpenSearch

    from collector.batchbytes import (
        BATCHES_MAPPING,
        batch_doc_id,
        batch_document,
        batches_index,
    )
    from collector.documents import iso_nanos
    from collector.lifecycle import LifecycleInstaller
    from tests.integration import v2_store

    if ism_available:
        pytest.skip(reason="with ISM the job only records ISM's deletions")
    site = write_site(tmp_path, prefix, os_url, os_http)
    LifecycleInstaller(os_http, prefix=prefix, policies={}, replicas=0).install()
    now = time.time_ns()
    old = dt.datetime.fromtimestamp((now - 30 * MONTH_NS) / 1e9, dt.UTC)
    start = int(old.replace(day=10, hour=12).timestamp()) * 10**9  # far from a month's edge
    agent, stream_id = "v2-batches", integrity.new_stream_id()
    key = Ed25519PrivateKey.generate()
    v2_store.write_public_key(site.keys / f"{agent}.pub", key)
    stream = v2_store.build_stream(agent, stream_id, key, 10, batch=10, start_time=start)
    index = v2_store.month_index(prefix, start)
    client = OpenSearch(hosts=[os_url], timeout=60)
    try:
        v2_store.create_indices(client, prefix, [index])
        v2_store.store(client, prefix, stream)
    finally:
        client.close()
    paired = batches_index(prefix, index)
    alone_old = f"{prefix}-batches-standard-{index_month(now - 40 * MONTH_NS)}"
    alone_young = f"{prefix}-batches-standard-{index_month(now - 1 * MONTH_NS)}"
    sequences = [event.sequence for event in stream.events]
    for target in (paired, alone_old, alone_young):
        doc_id = batch_doc_id(agent, stream_id, sequences, stream.heads)
        written = os_http(
            "PUT",
            f"/{target}/_create/{doc_id}",
            body=batch_document(
                agent_id=agent,
                stream_id=stream_id,
                sequences=sequences,
                datas=stream.data,
                timestamp=iso_nanos(start),
            ),
            params={"refresh": "true"},
        )
        assert written.status in (200, 201), written.body
    # made by the batches template: its strict mapping and the events' settings
    mapping = os_http("GET", f"/{paired}/_mapping").body[paired]["mappings"]
    assert mapping["dynamic"] == "strict"
    assert set(mapping["properties"]) == set(BATCHES_MAPPING["properties"])
    settings = os_http("GET", f"/{paired}/_settings", params={"flat_settings": "true"})
    assert settings.body[paired]["settings"]["index.codec"] == "best_compression"

    status = cli("retention", "status", "-c", str(site.config))
    assert status.returncode == 0, status.stderr
    assert f"    + {paired}\t1 batch documents" in status.stdout
    lines = {line.split("\t")[0].strip(): line for line in status.stdout.splitlines()}
    assert "\tdelete\t" in lines[alone_old] and "(due)" in lines[alone_old]
    assert "\tdelete\t" in lines[alone_young] and "(due)" not in lines[alone_young]

    ran = cli("retention", "run", "-c", str(site.config))
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert f"{index}: delete (standard" in ran.stdout and f"with {paired}" in ran.stdout
    assert f"{alone_old}: delete (standard, its events index is gone" in ran.stdout
    assert not exists(os_http, index) and not exists(os_http, paired)
    assert not exists(os_http, alone_old)
    assert exists(os_http, alone_young)

    records = file_records(site)
    assert records.problems == []
    by_index = {r.index: r for r in records.records}
    assert sorted(by_index) == sorted([index, alone_old])
    assert by_index[index].body["batches"]["index"] == paired
    assert by_index[index].body["batches"]["documents"] == 1
    assert by_index[index].runs(agent, stream_id) == [(1, 10)]
    assert by_index[alone_old].body["events_index"] == alone_old.replace("-batches-", "-events-")
    assert by_index[alone_old].agents == set()
    assert sorted(r["index"] for r in records_in_index(site)) == sorted([index, alone_old])

    refresh(os_http, f"{prefix}-*")
    code, report = verify_json(
        site.url,
        prefix,
        "--keys",
        str(site.keys),
        "--checkpoint-key",
        str(site.checkpoints / "collector-signing-key.pub"),
        "--agent",
        agent,
    )
    assert report["problems"] == [], report["problems"]
    got = [
        (r["kind"], r["first"], r["last"])
        for r in report["agents"][f"{agent}:{stream_id}"]["ranges"]
    ]
    assert got == [("EXPIRED", 1, 10)], (code, got)
