"""Least privilege in OpenSearch, against a real node with the security plugin.

One node (tests/integration/secured_opensearch.py: OpenSearch 2.19.4 with
opensearch-security 2.19.4.0, TLS on HTTP and transport) loaded with the roles, role
mapping and authentication config shipped in config/opensearch/security, unchanged.
Every tool runs as a real process under the role it is meant for:

- crm_audit_admin: `crm-audit-collector setup` installs templates and indices (the
  writer's attempt is refused first), `hold place|list|release` manage a legal hold.
- crm_audit_writer: the real collector (basic auth over TLS, ``setup_on_start: false``,
  integrity, detection with the shipped rules) indexes exactly what a real agent sent,
  writes seals, chain heads, alerts, leases and a dead letter, and logs no refusal; it
  reads back a re-delivered range (a different one is a fork alert: a refused read
  would skip that check silently); the same collector authenticated by client
  certificate only indexes too. Deleting
  indices or documents, updating events, changing settings, mappings or templates,
  closing indices and reading holds are refused with 403 naming the action.
- crm_audit_retention: `retention run` (the timer's job; the writer's config says
  retention.enforcer off) makes a month read-only, deletes an expired one after its
  signed record and keeps a held one; lifting the hold and deleting any non-events
  index are refused, as are the writer's delete and force-merge.
- crm_audit_analyst (backend role soc-analysts): searches events, seals and alerts,
  `crm-audit verify` and `crm-audit report` work with its credentials; every write is
  refused with 403.
- TLS verification: a client without the cluster's CA, or with a foreign one, fails with
  CERTIFICATE_VERIFY_FAILED (collector, setup and verify say so), a wrong password 401.

What the roles cannot stop, shown last: the writer may overwrite an event (create and
overwrite are one action for the plugin); `crm-audit verify` names the altered range.

The processes get an environment without OPENSEARCH_URL: the collector's CLI would
otherwise send them to the developer's cluster instead of this node.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from agent.sealing import PUBLIC_KEY_FILE, AgentKey, Chainer, seal
from collector.admin.pki import init_ca, issue_agent
from collector.admin.sample import generate, write_jsonl
from collector.checkpoints import read_checkpoints
from collector.documents import to_document
from collector.index import ClientAuth, OpenSearchHttp, Requester, Response, make_client
from collector.retention_job.records import RetentionRecords, read_record_files
from proto import integrity
from proto.v1 import audit_pb2 as pb
from proto.v1 import audit_pb2_grpc as pb_grpc
from tests.collector.conftest import NOV_27_2026, make_event
from tests.helpers import free_port
from tests.integration import secured_opensearch
from tests.integration.secured_opensearch import (
    ADMIN,
    ANALYST,
    PREFIX,
    RETENTION,
    WRITER,
    SecuredCluster,
)
from tests.integration.support import agent_config_head, entry_of, write_collector_config
from tests.processes import BIN, ManagedProcess, wait_for

pytestmark = pytest.mark.integration

secured_cluster = secured_opensearch.secured_cluster  # the module's node

AGENT_ID = "crm-host-1"
DLQ_AGENT = "crm-dlq-1"
CERT_AGENT = "crm-cert-1"
FORK_AGENT = "crm-fork-1"
EVENTS = 300
EVENTS_PATTERN = f"{PREFIX}-events-*"
RULES = Path(__file__).resolve().parents[2] / "config" / "rules.yaml"

# How the collector would show a refusal it swallowed: an HTTP status in an error
# message, a bulk item's status, or the plugin's own words.
REFUSAL = re.compile(
    r"security_exception|no permissions for|unauthori[sz]ed"
    r"|HTTP 40[13]\b|\(40[13] |status\W+40[13]\b",
    re.IGNORECASE,
)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "OPENSEARCH_URL"}


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """A console script (crm-audit, crm-audit-collector, ...) run to completion."""
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=180,
        check=False,
    )


def refusal_reason(response: Response) -> str:
    """The security plugin's reason of a refused request ("" when there is none)."""
    error = response.body.get("error") if isinstance(response.body, dict) else None
    return str(error.get("reason", "")) if isinstance(error, dict) else str(response.body)


def assert_refused(response: Response, action: str) -> None:
    """403 from the security plugin, naming the missing `action`."""
    assert response.status == 403, (response.status, response.body)
    reason = refusal_reason(response)
    assert f"no permissions for [{action}]" in reason, reason


@dataclass
class Env:
    """The node, the collector-side PKI and the config files of each identity."""

    cluster: SecuredCluster
    root: Path
    pki: Path
    keys: Path
    checkpoints: Path
    admin_yaml: Path
    writer_yaml: Path
    writer_port: int
    metrics_port: int

    @property
    def superuser(self) -> Requester:
        return self.cluster.superuser()

    def count(self, index: str, query: dict[str, Any] | None = None) -> int:
        counted = self.try_count(index, query)
        assert counted is not None, f"cannot count {index}"
        return counted

    def try_count(self, index: str, query: dict[str, Any] | None = None) -> int | None:
        """The count, or None while it cannot be had (for polling: an index the
        collector has just created answers 503 until its shard has started)."""
        http = self.superuser
        http("POST", f"/{index}/_refresh", params={"ignore_unavailable": "true"})
        response = http(
            "POST",
            f"/{index}/_count",
            body={"query": query or {"match_all": {}}},
            params={"ignore_unavailable": "true"},
        )
        return int(response.body["count"]) if response.status == 200 else None

    def reaches(self, index: str, at_least: int, query: dict[str, Any] | None = None) -> bool:
        """For `wait_for`: whether `index` holds at least `at_least` matching documents."""
        return (self.try_count(index, query) or 0) >= at_least

    def events_indices(self) -> list[str]:
        response = self.superuser(
            "GET", f"/_cat/indices/{EVENTS_PATTERN}", params={"format": "json", "h": "index"}
        )
        assert response.status == 200, response.body
        return sorted(str(row["index"]) for row in response.body)

    def collector_yaml(
        self, name: str, opensearch: str, *, port: int, extra: str = "", setup: bool = False
    ) -> Path:
        return write_collector_config(
            self.root / f"{name}.yaml",
            pki=self.pki,
            url=self.cluster.url,
            prefix=PREFIX,
            port=port,
            opensearch_extra=opensearch + ("" if setup else "\nsetup_on_start: false"),
            extra=extra,
        )

    def analyst_options(self, ca: Path | None = None) -> list[str]:
        analyst = self.cluster.users[ANALYST]
        return [
            "--opensearch",
            self.cluster.url,
            "--ca",
            str(ca or self.cluster.ca),
            "--user",
            analyst.name,
            "--password-file",
            str(analyst.password_file),
        ]

    def verify(self, *options: str) -> subprocess.CompletedProcess[str]:
        return cli(
            "crm-audit",
            "verify",
            *(options or self.analyst_options()),
            "--keys",
            str(self.keys),
            "--checkpoints",
            str(self.checkpoints),
            "--checkpoint-key",
            str(self.checkpoints / "collector-signing-key.pub"),
            "--agent",
            AGENT_ID,
            "--format",
            "json",
        )


@pytest.fixture(scope="module")
def env(secured_cluster: SecuredCluster, tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("security-plugin")
    pki = root / "pki"
    init_ca(pki)
    keys, checkpoints = root / "keys", root / "checkpoints"
    keys.mkdir()
    checkpoints.mkdir()
    e = Env(
        secured_cluster,
        root,
        pki,
        keys,
        checkpoints,
        root / "admin.yaml",
        root / "writer.yaml",
        free_port(),
        free_port(),
    )
    e.admin_yaml = e.collector_yaml(
        "admin", secured_cluster.opensearch_section(ADMIN), port=free_port(), setup=True
    )
    e.writer_yaml = e.collector_yaml(
        "writer",
        secured_cluster.opensearch_section(WRITER),
        port=e.writer_port,
        extra=f"""
        integrity:
          keys_dir: keys
          checkpoint_dir: checkpoints
          checkpoint_interval_s: 1
        detection:
          rules: {RULES}
          interval_s: 1
          lease_ttl_s: 5
        metrics:
          listen: "127.0.0.1:{e.metrics_port}"
        """,
    )
    return e


# -- setup: admin yes, writer no --------------------------------------------------------


@dataclass(frozen=True)
class SetupRuns:
    writer: subprocess.CompletedProcess[str]
    template_before_admin: int
    admin: subprocess.CompletedProcess[str]
    writer_dry_run: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def set_up(env: Env) -> SetupRuns:
    """The writer tries `setup` first (refused), then the admin runs it."""
    writer = cli("crm-audit-collector", "setup", "-c", str(env.writer_yaml))
    before = env.superuser("GET", f"/_index_template/{PREFIX}-events").status
    admin = cli("crm-audit-collector", "setup", "-c", str(env.admin_yaml))
    assert admin.returncode == 0, admin.stderr
    dry = cli("crm-audit-collector", "setup", "--dry-run", "-c", str(env.writer_yaml))
    return SetupRuns(writer, before, admin, dry)


def test_admin_sets_up_and_the_writer_cannot(set_up: SetupRuns, env: Env) -> None:
    assert set_up.writer.returncode == 1, set_up.writer
    assert "Traceback" not in set_up.writer.stderr
    assert "no permissions for [indices:admin/index_template/put]" in set_up.writer.stderr
    assert f"User [name={WRITER}" in set_up.writer.stderr
    assert set_up.template_before_admin == 404  # the refused setup changed nothing

    out = set_up.admin.stdout
    for line in (
        f"template {PREFIX}-events: created",
        f"template {PREFIX}-deadletter: created",
        f"index {PREFIX}-seals: created",
        f"index {PREFIX}-alerts: created",
        f"index {PREFIX}-chainheads: created",
        f"index {PREFIX}-holds: created",
        "ISM: not installed on the cluster",
    ):
        assert line in out, out
    assert env.superuser("GET", f"/_index_template/{PREFIX}-events").status == 200
    # The writer may check what setup did (what the collector does at start).
    assert set_up.writer_dry_run.returncode == 0, set_up.writer_dry_run.stderr
    assert "dry run: nothing changed" in set_up.writer_dry_run.stdout


# -- the collector as crm_audit_writer -------------------------------------------------


@dataclass(frozen=True)
class Shipped:
    collector_log: str
    agent_log: str
    collector_exit: int
    agent_exit: int
    healthz: int
    dlq_ack: pb.Ack


def _scrape(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def ship(env: Env, port: int, agent: str, batches: list[pb.Batch]) -> list[pb.Ack]:
    """Batches over mTLS as `agent` (certificate from the collector-side PKI)."""
    cert, key = env.pki / "agents" / f"{agent}.crt", env.pki / "agents" / f"{agent}.key"
    if not cert.exists():
        issue_agent(env.pki, agent)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(env.pki / "ca.crt").read_bytes(),
        private_key=key.read_bytes(),
        certificate_chain=cert.read_bytes(),
    )
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        return list(pb_grpc.CollectorStub(channel).Ship(iter(batches), timeout=60))


def alerted(env: Env, rule: str) -> Callable[[], bool]:
    """Whether rule `rule` has raised an alert yet."""
    query = {"term": {"alert.rule.id": rule}}
    return lambda: env.reaches(f"{PREFIX}-alerts", 1, query)


@pytest.fixture(scope="module")
def shipped(env: Env, set_up: SetupRuns) -> Shipped:
    """A real agent's 300 events and one mapping-breaking event through the collector
    running as crm_audit_writer; both processes stopped before the tests look."""
    issued = issue_agent(env.pki, AGENT_ID)
    agent_yaml = env.root / "agent.yaml"
    log_file = env.root / "logs" / "crm.jsonl"
    log_file.parent.mkdir()
    agent_yaml.write_text(
        agent_config_head(
            agent_id=AGENT_ID,
            state_dir="agent-state",
            port=env.writer_port,
            ca=env.pki / "ca.crt",
            cert=issued.cert,
            key=issued.key,
            max_events=100,
        )
        + """integrity: {heartbeat_interval_s: 0.5}
sources:
  - {name: crm_app, format: jsonlines, paths: ["logs/*.jsonl"], poll_interval_s: 0.1}
""",
        encoding="utf-8",
    )
    made = cli("crm-audit-agent", "key", "-c", str(agent_yaml))
    assert made.returncode == 0, made.stderr
    registered = cli(
        "crm-audit",
        "keys",
        "register",
        str(env.keys),
        AGENT_ID,
        str(env.root / "agent-state" / "signing-key.pub"),
    )
    assert registered.returncode == 0, registered.stderr
    # Recent event times: the windowed rules evaluate them live (max_delay_s).
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    assert write_jsonl(log_file, generate(EVENTS, 7, start, rate_per_sec=2.0)) == EVENTS

    collector = ManagedProcess(
        ["crm-audit-collector", "run", "-c", str(env.writer_yaml)],
        env.root / "collector.log",
        env=_env(),
    )
    agent: ManagedProcess | None = None
    try:
        wait_for(lambda: "collector listening" in collector.log(), "collector", watch=[collector])
        agent = ManagedProcess(
            ["crm-audit-agent", "run", "-c", str(agent_yaml)], env.root / "agent.log", env=_env()
        )
        watch = [collector, agent]
        wait_for(lambda: env.reaches(EVENTS_PATTERN, EVENTS), f"{EVENTS} events", 120, watch=watch)

        def checkpointed() -> bool:
            # The agent ships stream format 2: its heads are checkpointed per stream.
            streams = read_checkpoints(env.checkpoints).streams
            return any(a == AGENT_ID and h[0] == EVENTS for (a, _), h in streams.items())

        wait_for(checkpointed, f"a checkpoint at {EVENTS}", 60, watch=watch)
        # Windowed detection (leases) and inline detection have written alerts.
        for rule in ("bulk-export", "login-after-failures"):
            wait_for(alerted(env, rule), f"a {rule} alert", 60, watch=watch)
        # A well-formed event OpenSearch refuses (more nested changes than
        # index.mapping.nested_objects.limit): the writer dead-letters it.
        changes = [
            pb.FieldChange(field=f"f{i}", old_value="a", new_value="b") for i in range(10_001)
        ]
        events = [make_event(1, DLQ_AGENT), make_event(2, DLQ_AGENT, changes=changes)]
        [dlq_ack] = ship(
            env,
            env.writer_port,
            DLQ_AGENT,
            [pb.Batch(batch_id=1, agent_id=DLQ_AGENT, events=events)],
        )
        healthz = _scrape(env.metrics_port, "/healthz")
    finally:
        agent_exit = agent.stop() if agent is not None else -1
        collector_exit = collector.stop()
    return Shipped(
        collector.log(),
        agent.log() if agent is not None else "",
        collector_exit,
        agent_exit,
        healthz,
        dlq_ack,
    )


def test_collector_as_writer_indexes_everything_a_real_agent_sent(
    shipped: Shipped, env: Env
) -> None:
    assert shipped.collector_exit == 0 and shipped.agent_exit == 0
    assert shipped.healthz == 200
    # Exactly what the agent sent, once each.
    agent_query = {"term": {"agent.id": AGENT_ID}}
    assert env.count(EVENTS_PATTERN, agent_query) == EVENTS
    found = env.superuser(
        "POST",
        f"/{EVENTS_PATTERN}/_search",
        body={
            "size": 0,
            "query": agent_query,
            "aggs": {"s": {"stats": {"field": "event.sequence"}}},
        },
    ).body["aggregations"]["s"]
    assert (found["min"], found["max"], found["count"]) == (1, EVENTS, EVENTS)
    # Seals, the chain head and the signed checkpoint reach the last event.
    seals = env.superuser(
        "POST",
        f"/{PREFIX}-seals/_search",
        body={
            "size": 0,
            "query": agent_query,
            "aggs": {"m": {"max": {"field": "seal.last_sequence"}}},
        },
    ).body
    assert seals["hits"]["total"]["value"] >= 3
    assert seals["aggregations"]["m"]["value"] == EVENTS
    heads = env.superuser(
        "POST", f"/{PREFIX}-chainheads/_search", body={"query": agent_query}
    ).body["hits"]["hits"]
    # One stream (format 2): its chain head document is "agent:stream".
    assert [h["_source"]["chain"]["sequence"] for h in heads] == [EVENTS]
    assert heads[0]["_id"] == f"{AGENT_ID}:{heads[0]['_source']['agent']['stream']}"
    # Detection kept its leases; the refused event is a dead letter, the rest indexed.
    assert env.count(f"{PREFIX}-leases", {"exists": {"field": "lease.evaluated_to"}}) >= 1
    assert shipped.dlq_ack.status == pb.Ack.STATUS_OK, shipped.dlq_ack
    assert (shipped.dlq_ack.indexed, shipped.dlq_ack.detail) == (2, "1 dead-lettered")
    letter = env.superuser("GET", f"/{PREFIX}-deadletter/_doc/{DLQ_AGENT}:2")
    assert letter.status == 200 and letter.body["_source"]["deadletter"]["status"] == 400
    assert env.count(EVENTS_PATTERN, {"term": {"agent.id": DLQ_AGENT}}) == 1
    # Nothing was refused along the way, not even something the collector got over.
    refusals = [line for line in shipped.collector_log.splitlines() if REFUSAL.search(line)]
    assert refusals == [], "\n".join(refusals)
    assert " ERROR " not in shipped.collector_log and "Traceback" not in shipped.collector_log


# (method, path with {events} for the first events index, body, the refused action)
Refusal = tuple[str, str, Any, str]
WRITER_REFUSED: list[Refusal] = [
    ("DELETE", "{events}", None, "indices:admin/delete"),
    ("DELETE", EVENTS_PATTERN, None, "indices:admin/delete"),
    ("DELETE", f"{PREFIX}-seals", None, "indices:admin/delete"),
    ("DELETE", "{events}/_doc/" + AGENT_ID + ":1", None, "indices:data/write/delete"),
    ("DELETE", f"{PREFIX}-chainheads/_doc/{AGENT_ID}", None, "indices:data/write/delete"),
    ("DELETE", f"{PREFIX}-seals/_doc/x", None, "indices:data/write/delete"),
    (
        "POST",
        "{events}/_update/" + AGENT_ID + ":1",
        {"doc": {"message": "x"}},
        "indices:data/write/update",
    ),
    (
        "PUT",
        "{events}/_settings",
        {"index.blocks.read_only": True},
        "indices:admin/settings/update",
    ),
    (
        "PUT",
        "{events}/_mapping",
        {"properties": {"x": {"type": "keyword"}}},
        "indices:admin/mapping/put",
    ),
    ("POST", "{events}/_close", None, "indices:admin/close"),
    (
        "PUT",
        f"_index_template/{PREFIX}-events",
        {"index_patterns": ["x-*"]},
        "indices:admin/index_template/put",
    ),
    ("DELETE", f"_index_template/{PREFIX}-events", None, "indices:admin/index_template/delete"),
    ("POST", f"{PREFIX}-holds/_search", {"query": {"match_all": {}}}, "indices:data/read/search"),
    ("POST", ".opendistro_security/_search", None, "indices:data/read/search"),
]


@pytest.mark.parametrize(("method", "path", "body", "action"), WRITER_REFUSED)
def test_writer_cannot_delete_or_reconfigure(
    shipped: Shipped, env: Env, method: str, path: str, body: Any, action: str
) -> None:
    writer = env.cluster.http(WRITER)
    target = path.format(events=env.events_indices()[0])
    assert_refused(writer(method, f"/{target}", body=body), action)


def test_writer_bulk_deletes_are_refused_per_item(shipped: Shipped, env: Env) -> None:
    index = env.events_indices()[0]
    lines = [json.dumps({"delete": {"_index": index, "_id": f"{AGENT_ID}:{n}"}}) for n in (1, 2)]
    response = env.cluster.http(WRITER)("POST", "/_bulk", body="\n".join(lines) + "\n")
    assert response.status == 200, response.body
    items = [item["delete"] for item in response.body["items"]]
    assert [item["status"] for item in items] == [403, 403]
    assert all(
        "no permissions for [indices:data/write/delete]" in i["error"]["reason"] for i in items
    )
    # _delete_by_query deletes through such items; this node cannot even route it (the
    # integ-test distribution has no reindex module). Should it one day, this fails
    # and its 403 belongs in WRITER_REFUSED.
    routed = env.cluster.http(WRITER)(
        "POST", f"/{index}/_delete_by_query", body={"query": {"match_all": {}}}
    )
    assert routed.status == 400 and "no handler found" in json.dumps(routed.body), routed
    assert env.count(EVENTS_PATTERN, {"term": {"agent.id": AGENT_ID}}) == EVENTS


# -- crm_audit_analyst ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "at_least"),
    [
        (EVENTS_PATTERN, EVENTS),
        (f"{PREFIX}-seals", 3),
        (f"{PREFIX}-alerts", 2),
        (f"{PREFIX}-holds", 0),
    ],
)
def test_analyst_searches(shipped: Shipped, env: Env, index: str, at_least: int) -> None:
    analyst = env.cluster.http(ANALYST)
    response = analyst("POST", f"/{index}/_search", body={"size": 1, "track_total_hits": True})
    assert response.status == 200, response.body
    assert response.body["hits"]["total"]["value"] >= at_least
    # Dashboards' Discover searches with _msearch.
    msearch = json.dumps({"index": index}) + "\n" + json.dumps({"size": 0}) + "\n"
    found = analyst("POST", "/_msearch", body=msearch)
    assert found.status == 200 and found.body["responses"][0]["status"] == 200, found.body


def test_analyst_verifies_and_reports(shipped: Shipped, env: Env) -> None:
    done = env.verify()
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    ranges = [(r["kind"], r["first"], r["last"]) for r in entry_of(report, AGENT_ID)["ranges"]]
    assert ranges == [("VALID", 1, EVENTS)]
    today = dt.datetime.now(dt.UTC).date()
    out = env.root / "report.html"
    made = cli(
        "crm-audit",
        "report",
        *env.analyst_options(),
        "--keys",
        str(env.keys),
        "--checkpoints",
        str(env.checkpoints),
        "--checkpoint-key",
        str(env.checkpoints / "collector-signing-key.pub"),
        "--from",
        (today - dt.timedelta(days=1)).isoformat(),
        "--to",
        today.isoformat(),
        "--out",
        str(out),
    )
    assert made.returncode == 0, made.stderr
    assert "integrity VALID" in made.stdout
    # The report saw the cluster, not a permission error taken for "nothing there".
    html = out.read_text(encoding="utf-8")
    assert env.events_indices()[0] in html


ANALYST_REFUSED: list[Refusal] = [
    ("PUT", "{events}/_doc/x", {"message": "x"}, "indices:data/write/index"),
    (
        "POST",
        "{events}/_update/" + AGENT_ID + ":1",
        {"doc": {"message": "x"}},
        "indices:data/write/update",
    ),
    ("DELETE", "{events}/_doc/" + AGENT_ID + ":1", None, "indices:data/write/delete"),
    ("PUT", f"{PREFIX}-alerts/_doc/x", {"alert": {"kind": "x"}}, "indices:data/write/index"),
    ("PUT", f"{PREFIX}-holds/_doc/x", {"record": "x"}, "indices:data/write/index"),
    ("POST", "_bulk", "BULK", "indices:data/write/bulk"),
    ("DELETE", "{events}", None, "indices:admin/delete"),
    (
        "PUT",
        "{events}/_settings",
        {"index.blocks.read_only": True},
        "indices:admin/settings/update",
    ),
    ("PUT", f"{PREFIX}-new", None, "indices:admin/create"),
    (
        "PUT",
        f"_index_template/{PREFIX}-events",
        {"index_patterns": ["x-*"]},
        "indices:admin/index_template/put",
    ),
    ("POST", ".opendistro_security/_search", None, "indices:data/read/search"),
]


@pytest.mark.parametrize(("method", "path", "body", "action"), ANALYST_REFUSED)
def test_analyst_changes_nothing(
    shipped: Shipped, env: Env, method: str, path: str, body: Any, action: str
) -> None:
    index = env.events_indices()[0]
    if body == "BULK":
        body = json.dumps({"index": {"_index": index, "_id": "x"}}) + '\n{"message": "x"}\n'
    analyst = env.cluster.http(ANALYST)
    assert_refused(analyst(method, f"/{path.format(events=index)}", body=body), action)


# -- client certificate, legal hold, TLS --------------------------------------------


def test_collector_with_client_certificate_only_indexes(set_up: SetupRuns, env: Env) -> None:
    # Who the certificate is, for the plugin: the CN, mapped like the internal user.
    who = env.cluster.cert_http(env.cluster.writer_cert)("GET", "/_plugins/_security/authinfo")
    assert who.status == 200, who.body
    assert (who.body["user_name"], who.body["roles"]) == (WRITER, ["crm_audit_writer"])

    port = free_port()
    config = env.collector_yaml(
        "cert", env.cluster.opensearch_section(None, cert=env.cluster.writer_cert), port=port
    )
    assert "username" not in config.read_text()
    collector = ManagedProcess(
        ["crm-audit-collector", "run", "-c", str(config)],
        env.root / "cert-collector.log",
        env=_env(),
    )
    try:
        wait_for(lambda: "collector listening" in collector.log(), "collector", watch=[collector])
        events = [make_event(n, CERT_AGENT) for n in range(1, 21)]
        [ack] = ship(
            env, port, CERT_AGENT, [pb.Batch(batch_id=1, agent_id=CERT_AGENT, events=events)]
        )
    finally:
        assert collector.stop() == 0
    assert (ack.status, ack.indexed) == (pb.Ack.STATUS_OK, 20), ack
    assert env.count(EVENTS_PATTERN, {"term": {"agent.id": CERT_AGENT}}) == 20
    refusals = [line for line in collector.log().splitlines() if REFUSAL.search(line)]
    assert refusals == [], "\n".join(refusals)


def test_writer_reads_back_a_redelivered_range(set_up: SetupRuns, env: Env) -> None:
    """A sealed range older than the stored chain head is compared with the stored events
    (a GET the collector skips silently when refused): a different one is a fork."""
    state = env.root / f"state-{FORK_AGENT}"
    key = AgentKey.load_or_create(state)
    registered = cli(
        "crm-audit", "keys", "register", str(env.keys), FORK_AGENT, str(state / PUBLIC_KEY_FILE)
    )
    assert registered.returncode == 0, registered.stderr

    def sealed(chainer: Chainer, first: int, batch_id: int, user: str) -> pb.Batch:
        events = [
            make_event(n, FORK_AGENT, user=pb.User(name=user)) for n in range(first, first + 5)
        ]
        for event in events:
            chainer.link(event)
        batch = pb.Batch(batch_id=batch_id, agent_id=FORK_AGENT, events=events)
        seal(batch, key, now_unix_nano=NOV_27_2026 + batch_id)
        return batch

    chain = Chainer(FORK_AGENT, None, integrity.genesis(FORK_AGENT))
    stored = [sealed(chain, 1, 1, "alice"), sealed(chain, 6, 2, "alice")]
    other = sealed(Chainer(FORK_AGENT, None, integrity.genesis(FORK_AGENT)), 1, 3, "mallory")
    collector = ManagedProcess(
        ["crm-audit-collector", "run", "-c", str(env.writer_yaml)],
        env.root / "fork-collector.log",
        env=_env(),
    )
    try:
        wait_for(lambda: "collector listening" in collector.log(), "collector", watch=[collector])
        acks = ship(env, env.writer_port, FORK_AGENT, stored)
        [again] = ship(env, env.writer_port, FORK_AGENT, [other])
    finally:
        assert collector.stop() == 0
    assert [(a.status, a.indexed) for a in acks] == [(pb.Ack.STATUS_OK, 5)] * 2, acks
    assert (again.status, again.duplicates) == (pb.Ack.STATUS_OK, 5), again  # stored kept
    env.superuser("POST", f"/{PREFIX}-alerts/_refresh")
    alerts = env.superuser(
        "POST",
        f"/{PREFIX}-alerts/_search",
        body={"query": {"bool": {"filter": [{"term": {"agent.id": FORK_AGENT}}]}}},
    ).body["hits"]["hits"]
    found = [
        (a["alert"]["kind"], a["alert"]["first_sequence"], a["alert"]["last_sequence"])
        for a in (hit["_source"] for hit in alerts)
    ]
    assert found == [("fork", 1, 5)], found
    refusals = [line for line in collector.log().splitlines() if REFUSAL.search(line)]
    assert refusals == [], "\n".join(refusals)


def test_admin_places_and_releases_a_legal_hold(shipped: Shipped, env: Env) -> None:
    indices = env.events_indices()
    first, last = indices[0].rsplit("-", 1)[1], indices[-1].rsplit("-", 1)[1]
    hold = ["--class", "standard", "--from", first, "--to", last]
    refused = cli(
        "crm-audit-collector", "hold", "place", *hold, "--reason", "x", "-c", str(env.writer_yaml)
    )
    assert refused.returncode != 0 and "no permissions for" in refused.stderr, refused

    placed = cli(
        "crm-audit-collector",
        "hold",
        "place",
        *hold,
        "--reason",
        "case 42",
        "-c",
        str(env.admin_yaml),
    )
    assert placed.returncode == 0, placed.stderr
    # Every events index of the range, and the batches indices holding their bytes.
    held = placed.stdout.split("\n", 1)[1].split()
    batches = sorted(set(held) - set(indices))
    assert set(indices) <= set(held) and batches, placed.stdout
    assert all(name.startswith(f"{PREFIX}-batches-standard-") for name in batches), held
    assert f"placed on {len(held)} indices" in placed.stdout
    hold_id = placed.stdout.split()[1]
    try:
        for name in (indices[0], *batches):
            settings = env.superuser("GET", f"/{name}/_settings").body
            assert settings[name]["settings"]["index"]["blocks"]["read_only"] == "true"
        # Held: even the admin's delete fails, and the writer cannot lift the block.
        deleted = env.cluster.http(ADMIN)("DELETE", f"/{indices[0]}")
        assert deleted.status == 403 and "cluster_block_exception" in json.dumps(deleted.body)
        lift = env.cluster.http(WRITER)(
            "PUT", f"/{indices[0]}/_settings", body={"index.blocks.read_only": None}
        )
        assert_refused(lift, "indices:admin/settings/update")
        listed = cli("crm-audit-collector", "hold", "list", "-c", str(env.admin_yaml))
        assert listed.returncode == 0 and f"{hold_id}\tactive" in listed.stdout, listed
    finally:
        released = cli(
            "crm-audit-collector", "hold", "release", "--id", hold_id, "--reason", "closed",
            "-c", str(env.admin_yaml),
        )  # fmt: skip
    assert released.returncode == 0, released.stderr
    settings = env.superuser("GET", f"/{indices[0]}/_settings").body
    assert "blocks" not in settings[indices[0]]["settings"]["index"]
    # Who did it, as OpenSearch authenticated them, is on record.
    actions = env.superuser(
        "POST", f"/{PREFIX}-holds/_search", body={"query": {"term": {"record": "action"}}}
    ).body["hits"]["hits"]
    assert sorted(h["_source"]["action"]["type"] for h in actions) == ["place", "release"]
    assert {h["_source"]["action"]["opensearch_user"] for h in actions} == {ADMIN}


def test_tls_verification_is_never_skipped(set_up: SetupRuns, env: Env) -> None:
    writer = env.cluster.users[WRITER]
    for ca in (None, env.cluster.foreign_ca):  # system store, foreign CA
        auth = ClientAuth(username=writer.name, password=writer.password, ca=ca)
        response = OpenSearchHttp(make_client(env.cluster.url, timeout_s=10, auth=auth))("GET", "/")
        assert response.status == 0 and "CERTIFICATE_VERIFY_FAILED" in json.dumps(response.body)
    wrong = ClientAuth(username=writer.name, password="wrong", ca=env.cluster.ca)
    assert (
        OpenSearchHttp(make_client(env.cluster.url, timeout_s=10, auth=wrong))("GET", "/").status
        == 401
    )

    foreign = env.cluster.opensearch_section(WRITER).replace(
        f"ca: {env.cluster.ca}", f"ca: {env.cluster.foreign_ca}"
    )
    metrics = free_port()
    config = env.collector_yaml(
        "foreign", foreign, port=free_port(), extra=f'metrics: {{listen: "127.0.0.1:{metrics}"}}'
    )
    setup = cli("crm-audit-collector", "setup", "--dry-run", "-c", str(config))
    assert setup.returncode == 1 and "Traceback" not in setup.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in setup.stderr, setup.stderr
    collector = ManagedProcess(
        ["crm-audit-collector", "run", "-c", str(config)], env.root / "foreign.log", env=_env()
    )
    try:
        wait_for(lambda: "collector listening" in collector.log(), "collector", watch=[collector])
        failed = [
            line for line in collector.log().splitlines() if "OpenSearch setup failed" in line
        ]
        assert failed and "CERTIFICATE_VERIFY_FAILED" in failed[0], collector.log()
        assert _scrape(metrics, "/healthz") == 503
    finally:
        assert collector.stop() == 0
    verify = env.verify(*env.analyst_options(ca=env.cluster.foreign_ca))
    assert verify.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in verify.stderr, verify


# -- crm_audit_retention: the retention job from a timer ------------------------------

RET_AGENT = "crm-retention-1"
DAY_NS = 86_400 * 10**9
# Now is December 2026 (the tests' clock is real): the shipped policy keeps 2,555 days
# (deleted: 2018) and makes read-only after 30 (warm: September 2026).
EXPIRED, HELD, WARM = "2018.01", "2018.02", "2026.09"


def _events_index(month: str) -> str:
    return f"{PREFIX}-events-standard-{month}"


def _history(env: Env) -> None:
    """Old months of RET_AGENT, as the collector indexed them years ago (the superuser
    writes them here: the writer may not create the past)."""
    lines: list[str] = []
    for number, month in enumerate((EXPIRED, HELD, WARM)):
        year, mon = (int(part) for part in month.split("."))
        start = int(dt.datetime(year, mon, 10, tzinfo=dt.UTC).timestamp()) * 10**9
        for offset in range(1, 6):
            sequence = number * 5 + offset
            doc = to_document(
                make_event(sequence, RET_AGENT, time_unix_nano=start + sequence * DAY_NS),
                agent_id=RET_AGENT,
                received_unix_nano=start + sequence * DAY_NS,
            )
            lines.append(
                json.dumps({"create": {"_index": _events_index(month), "_id": doc.doc_id}})
            )
            lines.append(json.dumps(doc.source))
    done = env.superuser("POST", "/_bulk", body="\n".join(lines) + "\n", params={"refresh": "true"})
    assert done.status == 200 and not done.body["errors"], done.body


def _with_enforcer(env: Env, name: str, source: Path, enforcer: str, opensearch: str) -> Path:
    """`source` (a collector.yaml) with other credentials and retention.enforcer."""
    data = yaml.safe_load(source.read_text())
    data["opensearch"] = {
        **{k: v for k, v in data["opensearch"].items() if k not in ("username", "password_file")},
        **yaml.safe_load(opensearch),
    }
    data["retention"]["enforcer"] = enforcer
    path = env.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _retention_run(config: Path) -> subprocess.CompletedProcess[str]:
    return cli("crm-audit-collector", "retention", "run", "-c", str(config))


def _exists(env: Env, index: str) -> bool:
    return env.superuser("HEAD", f"/{index}").status == 200


def test_retention_user_runs_the_job_and_deletes_nothing_else(set_up: SetupRuns, env: Env) -> None:
    """The deployment of README "Retention": the always-on collector (crm_audit_writer,
    retention.enforcer off) never runs the job; `retention run` from the timer, as
    crm-audit-retention, makes a month read-only, deletes an expired one after its
    signed record, keeps a held one, and may delete nothing but events indices."""
    _history(env)
    expired, held, warm = (_events_index(m) for m in (EXPIRED, HELD, WARM))
    retention_yaml = _with_enforcer(
        env, "retention", env.writer_yaml, "auto", env.cluster.opensearch_section(RETENTION)
    )
    writer_off = _with_enforcer(
        env, "writer-off", env.writer_yaml, "off", env.cluster.opensearch_section(WRITER)
    )
    writer_auto = _with_enforcer(
        env, "writer-auto", env.writer_yaml, "auto", env.cluster.opensearch_section(WRITER)
    )
    writer = env.cluster.http(WRITER)
    retention = env.cluster.http(RETENTION)

    # The writer's config says off: `retention run` with it is a usage error.
    off = _retention_run(writer_off)
    assert off.returncode == 2 and "retention.enforcer is off" in off.stderr, off
    # Run as the writer anyway (enforcer auto): refused, nothing changed.
    as_writer = _retention_run(writer_auto)
    assert as_writer.returncode == 1 and "no permissions for" in as_writer.stderr, as_writer
    assert "Traceback" not in as_writer.stderr
    assert_refused(writer("DELETE", f"/{expired}"), "indices:admin/delete")
    assert_refused(writer("POST", f"/{warm}/_forcemerge"), "indices:admin/forcemerge")
    assert _exists(env, expired)

    hold = ["--class", "standard", "--from", HELD, "--to", HELD]
    placed = cli(
        "crm-audit-collector", "hold", "place", *hold, "--reason", "case 7", "-c",
        str(env.admin_yaml),
    )  # fmt: skip
    assert placed.returncode == 0, placed.stderr
    hold_id = placed.stdout.split()[1]
    try:
        ran = _retention_run(retention_yaml)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert REFUSAL.search(ran.stdout + ran.stderr) is None, ran.stdout + ran.stderr
        assert "enforcer: collector (auto: no ISM plugin)" in ran.stdout, ran.stdout
        assert f"{expired}: delete (standard" in ran.stdout, ran.stdout
        assert f"{warm}: read-only + force-merge (standard" in ran.stdout, ran.stdout
        assert f"kept: {held}: delete due, kept: legal hold" in ran.stdout, ran.stdout
        assert not _exists(env, expired) and _exists(env, held)
        # The record's scans closed their points in time (a refused close leaves them
        # open until they time out).
        pits = env.superuser("GET", "/_search/point_in_time/_all")
        assert pits.status == 200 and pits.body["pits"] == [], pits.body
        settings = env.superuser("GET", f"/{warm}/_settings", params={"flat_settings": "true"})
        assert settings.body[warm]["settings"]["index.blocks.write"] == "true", settings.body
        segments = env.superuser("GET", f"/{warm}/_segments").body["indices"][warm]["shards"]
        assert [len(s[0]["segments"]) for s in segments.values()] == [1], segments

        # The retention credentials cannot lift the hold, nor delete the held index.
        assert_refused(
            retention("PUT", f"/{held}/_settings", body={"index.blocks.read_only": None}),
            "indices:admin/settings/update",
        )
        for blocked in (retention("DELETE", f"/{held}"), retention("PUT", f"/{held}/_block/write")):
            assert blocked.status == 403, blocked.body
            assert "cluster_block_exception" in json.dumps(blocked.body), blocked.body
        # Delete reaches events indices only.
        for other in ("seals", "retention", "holds", "chainheads", "alerts", "leases"):
            assert_refused(retention("DELETE", f"/{PREFIX}-{other}"), "indices:admin/delete")
        assert_refused(retention("DELETE", f"/{PREFIX}-seals/_doc/x"), "indices:data/write/delete")
    finally:
        released = cli(
            "crm-audit-collector", "hold", "release", "--id", hold_id, "--reason", "closed",
            "-c", str(env.admin_yaml),
        )  # fmt: skip
    assert released.returncode == 0, released.stderr
    again = _retention_run(retention_yaml)
    assert again.returncode == 0 and f"{held}: delete (standard" in again.stdout, again
    assert not _exists(env, held) and _exists(env, warm)

    # Two deletions, two signed records: in the checkpoint directory and the index.
    keys = {
        integrity.key_id(k): k
        for pub in env.checkpoints.glob("*.pub")
        for k in integrity.load_public_keys(pub.read_bytes())
    }
    records = RetentionRecords()
    read_record_files(env.checkpoints, keys, records)
    assert records.problems == []
    assert sorted(r.index for r in records.records) == [expired, held]
    assert {r.enforcer for r in records.records} == {"collector"}
    assert records.covering(RET_AGENT, 1) is not None  # the expired month's sequences
    assert records.covering(RET_AGENT, 11) is None  # the warm month is kept
    indexed = env.superuser("POST", f"/{PREFIX}-retention/_search", body={"size": 10})
    assert sorted(h["_source"]["retention"]["index"] for h in indexed.body["hits"]["hits"]) == [
        expired,
        held,
    ], indexed.body


# -- what the roles cannot stop ---------------------------------------------------------


def test_writer_overwrite_is_allowed_but_verify_names_it(shipped: Shipped, env: Env) -> None:
    """Runs last: it alters the trail the tests above verified."""
    query = {
        "bool": {"filter": [{"term": {"agent.id": AGENT_ID}}, {"term": {"event.sequence": 7}}]}
    }
    hit = env.superuser("POST", f"/{EVENTS_PATTERN}/_search", body={"query": query}).body["hits"][
        "hits"
    ][0]
    doc_id = hit["_id"]
    source = hit["_source"]
    source["user"]["name"] = "mallory"
    overwritten = env.cluster.http(WRITER)("PUT", f"/{hit['_index']}/_doc/{doc_id}", body=source)
    # One action (indices:data/write/index) for create and overwrite: a role that lets
    # the collector create events lets its credentials replace them.
    assert overwritten.status == 200 and overwritten.body["result"] == "updated"
    env.count(EVENTS_PATTERN)  # refresh
    done = env.verify()
    assert done.returncode == 1, done.stderr
    ranges = entry_of(json.loads(done.stdout), AGENT_ID)["ranges"]
    altered = [(r["first"], r["last"]) for r in ranges if r["kind"] == "ALTERED"]
    assert altered == [(7, 7)]
