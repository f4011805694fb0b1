"""`crm-audit report` end to end: sample data with injected incidents and a silent source
in the real OpenSearch, sealed and chained exactly as agent and collector do it (agent
keys, `Chainer`, seals, collector seal documents, chain heads, signed checkpoints), the
real `crm-audit report` and `report-verify` commands, and the report opened in headless
Chromium.

Data (2026-10-01 .. 2026-10-14):

- agent ``rpt-crm-1``, source ``crm-app``: 1,500 generated CRM records plus injected
  incidents on 2026-10-09 (user ``mallory``: 25 failed logins, a 50,000-record export,
  a role.assign to admin; ``hsupport`` acting as ``kengel``); heartbeats every 5
  minutes, so never silent. Every CRM event belongs to one of two tenants
  (organization), every role.assign names the user acted upon and the role granted
  (user.target), as a source mapping sets them.
- agent ``rpt-db-1``, source ``pg-prod``: a database statement every 10 minutes with
  grants, role and audit-config changes, silent (no event, no heartbeat) from
  2026-10-06 00:00 to 2026-10-08 00:00; one stored event altered afterwards.
- detection alerts, a response record, an integrity alert, a legal hold.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch, helpers

from agent.parsers import get_parser
from agent.sealing import AgentKey, Chainer, heartbeat, seal
from collector.admin.sample import generate
from collector.checkpoints import CheckpointFile, load_or_create_key
from collector.detect.alerts import Alert, mapping_for_alerts, response_document
from collector.documents import index_name, iso_nanos, to_document
from collector.gate import (
    alert_request,
    event_integrity_fields,
    integrity_indices,
    seal_document,
    seal_id,
)
from collector.index import OpenSearchHttp, make_client
from collector.keys import register_key
from collector.lifecycle import LifecycleInstaller
from collector.report.access import (
    export_query,
    failed_login_query,
    impersonation_query,
    privileged_query,
)
from proto import integrity
from proto.v1 import audit_pb2 as pb
from tests.processes import BIN

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
POLICY = json.loads((REPO / "config" / "opensearch" / "ism-standard.json").read_text())
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 10, 15, tzinfo=UTC)  # --to 2026-10-14 includes that day
SILENT_FROM = datetime(2026, 10, 6, tzinfo=UTC)
SILENT_TO = datetime(2026, 10, 8, tzinfo=UTC)
INCIDENT = datetime(2026, 10, 9, 14, tzinfo=UTC)
BATCH = 100
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


@dataclass
class Env:
    root: Path
    url: str
    prefix: str
    client: OpenSearch
    keys: Path
    checkpoints: Path
    signing_key: Path
    altered: tuple[str, int]

    @property
    def events(self) -> str:
        return f"{self.prefix}-events-*"


def _incident_lines() -> list[dict[str, Any]]:
    user = {
        "id": "u-6666",
        "name": "mallory",
        "email": "mallory@bank.example",
        "roles": ["advisor"],
    }
    base = {"user": user, "source_ip": "203.0.113.66", "device": "WS-6666", "user_agent": "curl/8"}
    lines = []
    for i in range(25):
        when = INCIDENT + timedelta(seconds=2 * i)
        lines.append(
            {
                **base,
                "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "event": "login",
                "outcome": "failure",
                "reason": "bad_password",
                "message": "login failed for mallory: bad_password",
            }
        )
    lines.append(
        {
            **base,
            "timestamp": (INCIDENT + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "event": "login",
            "outcome": "success",
            "message": "user mallory logged in",
        }
    )
    lines.append(
        {
            **base,
            "timestamp": (INCIDENT + timedelta(minutes=7)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "event": "role.assign",
            "outcome": "success",
            "object": {"type": "user", "id": "u-6666", "name": "mallory"},
            "changes": [{"field": "roles", "old": "advisor", "new": "advisor,admin"}],
            "message": "role admin assigned to mallory",
        }
    )
    lines.append(
        {
            **base,
            "timestamp": (INCIDENT + timedelta(minutes=9)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "event": "record.export",
            "outcome": "success",
            "object": {"type": "customer_list", "id": "EXP-66666", "name": "customers: all"},
            "record_count": 50_000,
            "message": "50000 customer records exported as CSV (EXP-66666)",
        }
    )
    return lines


IMPERSONATOR = "hsupport"
# (event, acting as): a support session as kengel; then the support user's own work.
_ACTING = [
    ("login.impersonation", "kengel"),
    ("record.view", "kengel"),
    ("record.update", "kengel"),
    ("role.assign", "kengel"),
    ("record.view", None),
    ("logout", None),
]
TENANTS = ("bank-de", "bank-at")


def _impersonation_lines() -> list[dict[str, Any]]:
    user = {"id": "u-7001", "name": IMPERSONATOR, "roles": ["support"]}
    lines = []
    for i, (action, acting_as) in enumerate(_ACTING):
        when = INCIDENT + timedelta(hours=2, minutes=i)
        line: dict[str, Any] = {
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "event": action,
            "outcome": "success",
            "user": user,
            "source_ip": "10.20.9.9",
            **({"on_behalf_of": acting_as} if acting_as else {}),
            "object": {"type": "customer", "id": f"CUST-7{i:05d}", "name": "Kunde"},
            "message": f"{action} by {IMPERSONATOR}" + (f" as {acting_as}" if acting_as else ""),
        }
        if action == "role.assign":
            line["object"] = {"type": "user", "id": "u-1011", "name": "nengel"}
            line["message"] = "role compliance assigned to nengel"
        lines.append(line)
    return lines


def _schema_additions(event: pb.AuditEvent, line: dict[str, Any]) -> None:
    """What a source mapping would set from keys the default JSON mapping leaves in
    attributes: the tenant, the user acted as, the user acted upon and the role granted."""
    number = int(line["user"]["id"].rsplit("-", 1)[1])
    event.organization.id = TENANTS[number % 2]
    if number % 2 == 0:
        event.organization.name = "Bank DE AG"
    if "on_behalf_of" in line:
        event.effective_user.name = line["on_behalf_of"]
    if line["event"] == "role.assign":
        event.target_user.id = line["object"]["id"]
        event.target_user.name = line["object"]["name"]
        event.target_user.roles.append(line["message"].split()[1])  # "role X assigned to Y"


def crm_events() -> list[pb.AuditEvent]:
    rate = 1500 / (13 * 86400)
    lines = list(generate(1500, 7, START + timedelta(hours=1), rate_per_sec=rate))
    lines += _incident_lines() + _impersonation_lines()
    lines.sort(key=lambda line: line["timestamp"])
    parse = get_parser("jsonlines", {})
    out = []
    for line in lines:
        event = parse(json.dumps(line).encode())
        assert event is not None
        _schema_additions(event, line)
        event.log.source_name = "crm-app"
        event.log.format = "jsonlines"
        out.append(event)
    return out


_DB_ACTIONS = [
    ("db.select", pb.AUDIT_CATEGORY_DATA_OPERATION),
    ("db.select", pb.AUDIT_CATEGORY_DATA_OPERATION),
    ("db.update", pb.AUDIT_CATEGORY_DATA_OPERATION),
    ("db.select", pb.AUDIT_CATEGORY_DATA_OPERATION),
    ("db.export", pb.AUDIT_CATEGORY_DATA_OPERATION),
]


def db_events() -> list[pb.AuditEvent]:
    out = []
    moment = START + timedelta(minutes=3)
    i = 0
    while moment < END:
        if not SILENT_FROM <= moment < SILENT_TO:
            action, category = _DB_ACTIONS[i % len(_DB_ACTIONS)]
            if i % 97 == 0:
                action, category = "db.grant", pb.AUDIT_CATEGORY_SYSTEM_ADMIN
            elif i % 131 == 0:
                action, category = "db.role_change", pb.AUDIT_CATEGORY_SYSTEM_ADMIN
            elif i % 389 == 0:
                action, category = "db.audit_config_change", pb.AUDIT_CATEGORY_SYSTEM_ADMIN
            event = pb.AuditEvent(
                time_unix_nano=ns(moment),
                observed_unix_nano=ns(moment),
                action=action,
                outcome=pb.OUTCOME_SUCCESS,
                audit_category=category,
                message=f"{action} by app_rw",
            )
            event.user.name = "dba_ops" if category == pb.AUDIT_CATEGORY_SYSTEM_ADMIN else "app_rw"
            event.object.type = "table"
            event.object.name = "public.customers"
            if action == "db.export":
                event.record_count = 120
            event.log.source_name = "pg-prod"
            event.log.format = "pgaudit"
            out.append(event)
        moment += timedelta(minutes=10)
        i += 1
    return out


def ship(
    client: OpenSearch,
    prefix: str,
    root: Path,
    keys: Path,
    agent: str,
    events: list[pb.AuditEvent],
    heartbeat_every: timedelta | None,
) -> tuple[int, bytes]:
    """Chain, seal and index `events` as agent + collector would; return the head."""
    state = root / f"state-{agent}"
    key = AgentKey.load_or_create(state)
    register_key(keys, agent, key.public_pem())
    chainer = Chainer.load(state, agent)
    actions: list[dict[str, Any]] = []
    heads: list[tuple[int, int, bytes]] = []  # (time, sequence, head) after each batch
    for number, event in enumerate(events, start=1):
        event.sequence = number
        event.observer.agent_id = agent
        chainer.link(event)
    for start in range(0, len(events), BATCH):
        chunk = events[start : start + BATCH]
        batch = pb.Batch(batch_id=start // BATCH + 1, agent_id=agent, events=chunk)
        sealed_at = chunk[-1].time_unix_nano + 1_000_000
        seal(batch, key, now_unix_nano=sealed_at)
        indices = set()
        for event in chunk:
            doc = to_document(event, agent_id=agent, received_unix_nano=sealed_at)
            doc.source["integrity"] = {
                **doc.source.get("integrity", {}),
                **event_integrity_fields(integrity.canonical_event_bytes(event), event.chain_hash),
            }
            target = index_name(prefix, "standard", "monthly", doc.timestamp_unix_nano)
            indices.add(target)
            actions.append(
                {"_op_type": "create", "_index": target, "_id": doc.doc_id, "_source": doc.source}
            )
        body = seal_document(
            agent, batch.seal, received_unix_nano=sealed_at, indices=sorted(indices), verified=True
        )
        actions.append(
            {
                "_op_type": "create",
                "_index": f"{prefix}-seals",
                "_id": seal_id(agent, batch.seal),
                "_source": body,
            }
        )
        heads.append((sealed_at, chunk[-1].sequence, chunk[-1].chain_hash))
    if heartbeat_every is not None:
        moment = START
        position = -1
        while moment < END:
            while position + 1 < len(heads) and heads[position + 1][0] <= ns(moment):
                position += 1
            seq, head = (
                (heads[position][1], heads[position][2])
                if position >= 0
                else (None, integrity.genesis(agent))
            )
            hb = heartbeat(key, agent, seq, head, now_unix_nano=ns(moment))
            body = seal_document(
                agent, hb.seal, received_unix_nano=ns(moment), indices=[], verified=True
            )
            actions.append(
                {
                    "_op_type": "create",
                    "_index": f"{prefix}-seals",
                    "_id": seal_id(agent, hb.seal),
                    "_source": body,
                }
            )
            moment += heartbeat_every
    ok, errors = helpers.bulk(client, actions, refresh=False, chunk_size=2000)
    assert not errors and ok == len(actions)
    last = events[-1]
    client.index(
        index=f"{prefix}-chainheads",
        id=agent,
        body={
            "@timestamp": iso_nanos(heads[-1][0]),
            "agent": {"id": agent},
            "chain": {
                "sequence": last.sequence,
                "head": last.chain_hash.hex(),
                "key_id": key.key_id,
            },
        },
    )
    return last.sequence, last.chain_hash


def alerts(client: OpenSearch, prefix: str) -> None:
    index = f"{prefix}-alerts"
    client.indices.put_mapping(index=index, body=mapping_for_alerts())
    trigger = ns(INCIDENT)
    specs = [
        ("failed_login_burst", "high", "mallory", 0),
        ("bulk_export", "high", "mallory", 9),
        ("privilege_change", "medium", "mallory", 7),
        ("privilege_change", "medium", "dba_ops", 60 * 24),
        ("off_hours_login", "low", "jdoe", 60 * 30),
        ("off_hours_login", "low", "asmith", 60 * 50),
    ]
    actions = []
    for number, (rule, severity, user, minutes) in enumerate(specs):
        when = trigger + minutes * 60 * 1_000_000_000
        alert = Alert(
            rule_id=rule,
            rule_kind="event",
            description=f"{rule} rule",
            severity=severity,
            key=user,
            key_fields=("user.name",),
            start=when,
            trigger=when,
            trigger_id=f"rpt-crm-1:{number}",
            event_ids=(f"rpt-crm-1:{number}",),
            reason=f"{rule} by {user}",
        )
        actions.append(
            {"_index": index, "_id": alert.alert_id, "_source": alert.document(when + 10**9)}
        )
        if rule == "bulk_export":
            rid, body = response_document(
                alert.alert_id,
                rule,
                action="webhook",
                target="soc",
                outcome="delivered",
                attempts=1,
                detail="200 OK",
                status_code=200,
                now_unix_nano=when + 2 * 10**9,
            )
            actions.append({"_index": index, "_id": rid, "_source": body})
    gap = alert_request(
        prefix,
        "rpt-db-1",
        integrity.Finding("gap", 900, 900, "sequence 900 follows 898"),
        now_unix_nano=ns(SILENT_TO + timedelta(hours=1)),
        batch_id=9,
        peer="ipv4:127.0.0.1:5000",
    )
    actions.append({"_index": gap.index, "_id": gap.doc_id, "_source": gap.source})
    _ok, errors = helpers.bulk(client, actions, refresh=False)
    assert not errors


@pytest.fixture(scope="module")
def env(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("report")
    prefix = f"rpt-{uuid.uuid4().hex[:8]}"
    client = make_client(opensearch_url, timeout_s=60)
    keys, checkpoints = root / "keys", root / "checkpoints"
    try:
        LifecycleInstaller(
            OpenSearchHttp(client), prefix=prefix, policies={"standard": POLICY}
        ).install()
        for name, mapping in integrity_indices(prefix).items():
            if not client.indices.exists(index=name):
                client.indices.create(index=name, body={"mappings": mapping})
        crm = ship(client, prefix, root, keys, "rpt-crm-1", crm_events(), timedelta(minutes=5))
        db = ship(client, prefix, root, keys, "rpt-db-1", db_events(), None)
        alerts(client, prefix)
        hold = {
            "id": "LH-2026-001",
            "class": "standard",
            "from": "2026.10",
            "to": "2026.10",
            "status": "active",
            "reason": "SEC inquiry 2026-17",
            "placed_by": "compliance-officer",
            "placed_at": "2026-10-10T09:00:00.000000000Z",
            "indices": [f"{prefix}-events-standard-2026.10"],
        }
        client.index(
            index=f"{prefix}-holds",
            id="hold:LH-2026-001",
            body={"@timestamp": hold["placed_at"], "record": "hold", "hold": hold},
        )
        client.index(
            index=f"{prefix}-holds",
            id="action:LH-2026-001:place",
            body={
                "@timestamp": hold["placed_at"],
                "record": "action",
                "hold": {"id": "LH-2026-001"},
                "action": {
                    "type": "place",
                    "actor": "compliance-officer",
                    "reason": "SEC inquiry 2026-17",
                },
            },
        )
        collector_key = load_or_create_key(checkpoints / "collector-signing-key.pem")
        CheckpointFile(checkpoints, collector_key).append(
            {"rpt-crm-1": crm, "rpt-db-1": db}, now_unix_nano=ns(END)
        )
        client.indices.refresh(index=f"{prefix}-*")
        # Tamper: an attacker rewrites who issued one grant.
        hit = client.search(
            index=f"{prefix}-events-*",
            body={
                "size": 1,
                "query": {
                    "bool": {
                        "filter": [
                            {"term": {"agent.id": "rpt-db-1"}},
                            {"term": {"event.action": "db.grant"}},
                        ]
                    }
                },
                "sort": [{"event.sequence": "asc"}],
            },
        )["hits"]["hits"][0]
        client.update(
            index=hit["_index"],
            id=hit["_id"],
            body={"doc": {"user": {"name": "app_rw"}}},
            refresh=True,
        )
        yield Env(
            root,
            opensearch_url,
            prefix,
            client,
            keys,
            checkpoints,
            checkpoints / "collector-signing-key.pem",
            ("rpt-db-1", int(hit["_source"]["event"]["sequence"])),
        )
    finally:
        client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)
        for template in (f"{prefix}-events", f"{prefix}-batches", f"{prefix}-deadletter"):
            client.transport.perform_request(
                "DELETE", f"/_index_template/{template}", params={"ignore": 404}
            )
        client.close()


class Tables(HTMLParser):
    """Rows of every table, by the table's class; cells as text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._current: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._current = dict(attrs).get("class") or f"t{len(self.tables)}"
            self.tables.setdefault(self._current, [])
        elif tag == "tr" and self._current is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._current is not None:
            self.tables[self._current].append(self._row)
            self._row = None
        elif tag == "table":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def number(text: str) -> int:
    return int(text.replace(",", ""))


@dataclass
class Generated:
    path: Path
    html: str
    tables: dict[str, list[list[str]]]
    seconds: float
    stdout: str


@pytest.fixture(scope="module")
def report(env: Env) -> Generated:
    out = env.root / "q4-report.html"
    started = time.monotonic()
    done = subprocess.run(
        [
            str(BIN / "crm-audit"),
            "report",
            "--opensearch",
            env.url,
            "--prefix",
            env.prefix,
            "--from",
            "2026-10-01",
            "--to",
            "2026-10-14",
            "--out",
            str(out),
            "--keys",
            str(env.keys),
            "--checkpoints",
            str(env.checkpoints),
            "--checkpoint-key",
            str(env.signing_key.with_suffix(".pub")),
            "--signing-key",
            str(env.signing_key),
            "--policies",
            str(REPO / "config" / "opensearch"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    html = out.read_text(encoding="utf-8")
    parser = Tables()
    parser.feed(html)
    print(f"report generated in {seconds:.1f} s: {done.stdout.strip()}")
    return Generated(out, html, parser.tables, seconds, done.stdout)


def in_period(*clauses: dict[str, Any]) -> dict[str, Any]:
    period = {
        "range": {"@timestamp": {"gte": "2026-10-01T00:00:00Z", "lt": "2026-10-15T00:00:00Z"}}
    }
    return {"bool": {"filter": [period, *clauses]}}


def count(env: Env, query: dict[str, Any], index: str | None = None) -> int:
    return int(env.client.count(index=index or env.events, body={"query": query})["count"])


def test_coverage_lists_agents_sources_and_the_silent_source(env: Env, report: Generated) -> None:
    agents = {row[0]: row for row in report.tables["agents"][1:]}
    assert set(agents) == {"rpt-crm-1", "rpt-db-1"}
    for name, row in agents.items():
        assert row[1] == "yes"  # key registered
        assert number(row[3]) == count(env, in_period({"term": {"agent.id": name}}))
        assert row[-1] == "1"  # one chain: its format 1 history
    # Format 1: one chain per agent, labelled by the agent, with its stored head.
    header, *rows = report.tables["streams"]
    chains = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert set(chains) == {"rpt-crm-1", "rpt-db-1"}
    for name, chain in chains.items():
        assert chain["Format"] == "1" and chain["Follows"] == "-"
        assert number(chain["Events"]) == number(agents[name][3])
        head = env.client.get(index=f"{env.prefix}-chainheads", id=name)["_source"]
        assert number(chain["Chain head seq."]) == head["chain"]["sequence"]
    sources = {(r[0], r[1]): number(r[2]) for r in report.tables["sources"][1:]}
    assert sources == {
        ("rpt-crm-1", "crm-app"): count(env, in_period({"term": {"crm.source.name": "crm-app"}})),
        ("rpt-db-1", "pg-prod"): count(env, in_period({"term": {"crm.source.name": "pg-prod"}})),
    }
    # Events per day: the chart's data table adds up to the period's count.
    per_day = next(
        rows
        for cls, rows in report.tables.items()
        if rows and rows[0][0] == "day" and "crm-app" in rows[0]
    )
    total = sum(number(c) for row in per_day[1:] for c in row[1:])
    assert total == count(env, in_period()) > 3000
    silent = report.tables["silent"][1:]
    assert len(silent) == 1, silent
    agent, source, start, until, _duration, during = silent[0]
    assert (agent, source) == ("rpt-db-1", "pg-prod")
    last_before = env.client.search(
        index=env.events,
        body={
            "size": 1,
            "query": {
                "bool": {
                    "filter": [
                        {"term": {"agent.id": "rpt-db-1"}},
                        {"range": {"@timestamp": {"lt": SILENT_FROM.isoformat()}}},
                    ]
                }
            },
            "sort": [{"@timestamp": "desc"}],
        },
    )["hits"]["hits"][0]["_source"]["@timestamp"]
    first_after = env.client.search(
        index=env.events,
        body={
            "size": 1,
            "query": {
                "bool": {
                    "filter": [
                        {"term": {"agent.id": "rpt-db-1"}},
                        {"range": {"@timestamp": {"gte": SILENT_FROM.isoformat()}}},
                    ]
                }
            },
            "sort": [{"@timestamp": "asc"}],
        },
    )["hits"]["hits"][0]["_source"]["@timestamp"]
    assert start == last_before.replace("T", " ")[:19] + " UTC"
    assert until == first_after.replace("T", " ")[:19] + " UTC"
    assert "no seal at all" in during


def test_integrity_section_is_the_verifier_result(env: Env, report: Generated) -> None:
    verdicts = {row[0]: row[1] for row in report.tables["verify"][1:]}
    assert verdicts == {"rpt-crm-1": "VALID", "rpt-db-1": "FINDINGS"}
    findings = report.tables["findings"][1:]
    agent, seq = env.altered
    assert [agent, "ALTERED", str(seq)] == findings[0][:3], findings
    assert "user.name" in findings[0][3]
    event_id = report.tables["privileged"][0].index("Event id")
    flagged = [
        r
        for r in report.tables["privileged"][1:]
        if r[event_id] == f"{agent}:{seq} (ALTERED: see Integrity)"
    ]
    assert len(flagged) == 1
    summary = json.loads(
        re.search(r'id="crm-audit-verify-summary">(.*?)</script>', report.html, re.S)[1]  # type: ignore[index]
    )
    assert summary["verified"] is True and summary["valid"] is False
    assert summary["checkpoints"]["problems"] == []
    assert "2 checkpoint" not in report.html  # one line was written
    assert "1 checkpoint line(s) read and verified" in report.html


def test_access_review_numbers_equal_opensearch_counts(env: Env, report: Generated) -> None:
    privileged = report.tables["privileged"][1:]
    expected = count(env, in_period(privileged_query()))
    assert len(privileged) == expected > 10
    assert f"Privileged changes ({expected:,})" in report.html
    assert any(r[1] == "mallory" and r[2] == "role.assign" for r in privileged)
    # The user acted upon and the role granted, and the tenant, where the source gives them.
    head = report.tables["privileged"][0]
    rows = [dict(zip(head, r, strict=True)) for r in privileged]
    (escalation,) = [r for r in rows if r["User"] == "mallory" and r["Action"] == "role.assign"]
    assert (escalation["Target user"], escalation["Granted role"]) == ("mallory", "admin")
    assert escalation["Organization"] == "Bank DE AG (bank-de)"  # u-6666: the even tenant
    assigned = [r for r in rows if r["Action"] == "role.assign"]
    assert (
        len([r for r in assigned if r["Target user"] and r["Granted role"]])
        == count(
            env,
            in_period(
                {"term": {"event.action": "role.assign"}},
                {"exists": {"field": "user.target.roles"}},
            ),
        )
        == len(assigned)
    )
    assert {r["Organization"] for r in assigned} <= {"Bank DE AG (bank-de)", "bank-at"}
    assert not [r for r in rows if r["Organization"] and not r["Agent/source"].endswith("crm-app")]
    (acting,) = [r for r in rows if r["User"] == f"{IMPERSONATOR} as kengel"]
    assert (acting["Action"], acting["Target user"]) == ("role.assign", "nengel")
    by_action = {r[0]: number(r[1]) for r in report.tables["by-action"][1:]}
    for action in ("db.grant", "db.role_change", "db.audit_config_change", "role.assign"):
        assert by_action[action] == count(env, in_period({"term": {"event.action": action}}))
    exporters = report.tables["exporters"][1:]
    assert exporters[0][0] == "mallory" and number(exporters[0][2]) == 50_000
    exports = count(env, in_period(export_query()))
    assert f"Exports ({exports:,} exports" in report.html
    failed = count(env, in_period(failed_login_query()))
    assert f"Failed logins ({failed:,})" in report.html
    users = {r[0]: number(r[1]) for r in report.tables["failed-users"][1:]}
    assert users["mallory"] == 25


def test_impersonated_actions_are_listed(env: Env, report: Generated) -> None:
    head, *rows = report.tables["impersonation"]
    listed = [dict(zip(head, r, strict=True)) for r in rows]
    expected = count(env, in_period(impersonation_query()))
    # Acting as someone else: the first four of _ACTING; his own work is not listed.
    assert len(listed) == expected == 4
    assert f"Impersonated actions ({expected:,})" in report.html
    assert f"{expected:,} impersonated actions" in report.html  # the summary
    assert [(r["User"], r["Acting as"], r["Action"]) for r in listed] == [
        (IMPERSONATOR, "kengel", action) for action, _ in _ACTING[:4]
    ]
    assert {r["Organization"] for r in listed} == {"bank-at"}  # u-7001: odd, no name given
    assert count(env, in_period({"term": {"user.name": IMPERSONATOR}})) == len(_ACTING)


def test_alerts_by_rule_with_status_and_responses(env: Env, report: Generated) -> None:
    rows = {(r[0], r[1]): r for r in report.tables["alerts"][1:]}
    index = f"{env.prefix}-alerts"
    assert (
        number(rows[("privilege_change", "medium")][2])
        == count(
            env,
            in_period(
                {"term": {"alert.rule.id": "privilege_change"}},
                {"term": {"alert.kind": "detection"}},
            ),
            index,
        )
        == 2
    )
    assert rows[("bulk_export", "high")][3] == "open: 1"
    assert rows[("bulk_export", "high")][4] == "1"  # the webhook response
    assert rows[("integrity: gap", "integrity")][3] == "not tracked: 1"
    total = count(
        env, in_period({"bool": {"must_not": {"term": {"alert.kind": "response"}}}}), index
    )
    assert f"4. Alerts ({total})" in report.html


def test_retention_says_ism_is_missing_and_shows_holds(env: Env, report: Generated) -> None:
    rows = report.tables["retention"][1:]
    assert len(rows) == 1
    name, policy, enforcement, deletes, indices, oldest, _newest, verdict = rows[0]
    assert (name, policy, deletes, verdict) == (
        "standard",
        "policy file ism-standard.json",
        "2555 days",
        "NOT ENFORCED",
    )
    assert enforcement == (
        "ISM not installed and the collector's retention job never ran: not enforced"
    )
    assert report.tables["deletions"] == [
        ["Class", "Index", "Recorded", "Deleted by", "Events", "Docs", "Agents", "Rule"],
        ["none"],
    ]  # records checked (the collector key was given), none there
    assert number(indices) == 1 and oldest.startswith(f"{env.prefix}-events-standard-2026.10")
    holds = report.tables["holds"]
    assert holds[0][:5] == ["hold.id", "hold.class", "hold.from", "hold.to", "hold.status"]
    assert holds[1][:5] == ["LH-2026-001", "standard", "2026.10", "2026.10", "active"]
    assert len(holds) == 2  # the action record is not a second hold


def test_report_is_self_contained_with_inline_charts(report: Generated) -> None:
    html = report.html
    assert html.count("<svg ") == 5
    assert not re.search(r'(?:src|href)\s*=\s*"(?:https?:)?//', html)
    assert "<link" not in html and "<img" not in html
    assert "default-src 'none'" in html


def test_report_signature_verifies_and_breaks_on_one_altered_byte(
    env: Env, report: Generated
) -> None:
    pub = env.signing_key.with_suffix(".pub")

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "crm-audit"), "report-verify", str(path), "--key", str(pub)],
            capture_output=True,
            text=True,
            check=False,
        )

    good = check(report.path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "VALID" in good.stdout
    data = report.path.read_bytes()
    for needle in (b"mallory", b"FINDINGS", b"svg.chart", b"crm-audit/report"):
        spot = (
            data.find(needle)
            if needle != b"crm-audit/report"
            else data.find(b'"report_sha256"') + 20
        )
        assert spot > 0
        altered = env.root / "altered.html"
        altered.write_bytes(data[:spot] + bytes([data[spot] ^ 0x01]) + data[spot + 1 :])
        bad = check(altered)
        assert bad.returncode == 1, (needle, bad.stdout)
        assert "INVALID" in bad.stdout


def _chromium(url: str, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = root / f"profile-{uuid.uuid4().hex[:6]}"
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium not installed (scripts/install-system-deps.sh)"
)
def test_console_detection_catches_a_broken_page(tmp_path: Path) -> None:
    """The check below would notice a blocked network fetch or a script error."""
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
        'content="default-src \'none\'"></head><body><img src="http://192.0.2.1/x.png">'
        "</body></html>"
    )
    done = _chromium(page.as_uri(), tmp_path, "--dump-dom")
    assert _console(done.stderr), done.stderr[-2000:]


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium not installed (scripts/install-system-deps.sh)"
)
def test_report_renders_in_headless_chromium(env: Env, report: Generated) -> None:
    shot = env.root / "report.png"
    done = _chromium(
        report.path.as_uri(), env.root, f"--screenshot={shot}", "--window-size=1280,4000"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert _console(done.stderr) == [], _console(done.stderr)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 100_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1280, 4000)
    dom = _chromium(report.path.as_uri(), env.root, "--dump-dom")
    assert dom.returncode == 0 and _console(dom.stderr) == []
    assert dom.stdout.count('<svg class="chart"') == 5
    assert "CRM audit trail: compliance review" in dom.stdout
