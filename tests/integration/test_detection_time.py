"""Detection on event time, end to end: two agents, two collectors, one OpenSearch.

Traffic shipped live and a backlog whose events happened two to three days ago (written
to the agents' logs now, as a host coming back online would) each fire every windowed
rule and the generic match/threshold rules exactly once with the right key; the backlog's
alerts say they came from late data. Both collectors evaluate the rules (one at a time,
by lease) and every evaluation re-reads the whole test (``reread_s``), so repeats are
exercised all along; restarting both collectors raises nothing new; ``rules backfill``
over the same range writes nothing new, and a rule only the backfill knows gets its
alerts once, however often it runs. ``rules check --opensearch`` warns about a field and
an action no event has.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from collector.admin.pki import init_ca, issue_agent
from collector.admin.sample import format_timestamp
from tests.helpers import free_port
from tests.integration.support import (
    drop_prefix,
    search_hits,
    write_collector_config,
    write_jsonl_agent_config,
)
from tests.processes import ManagedProcess, wait_for

pytestmark = pytest.mark.integration

CLI = Path(sys.executable).parent / "crm-audit"
NOW = datetime.now(UTC)

RULES = """
rules:
  - id: burst
    severity: high
    kind: failed_login_burst
    actions: [login]
    window: 10m
    threshold: 5
    suppression: 1h
  - id: iban-changes
    severity: high
    kind: threshold
    where:
      - {field: event.action, in: [record.update]}
      - {field: crm.changes.field, in: [iban, bic]}
    key: [crm.object.id]
    window: 1h
    threshold: 3
  - id: export-total
    severity: high
    kind: threshold
    where: [{field: event.action, equals: record.export}]
    key: [user.name]
    window: 1h
    aggregate: sum
    field: crm.record_count
    threshold: 1000
  - id: spray
    severity: high
    kind: threshold
    where: [{field: event.outcome, equals: failure}]
    key: [source.ip]
    window: 10m
    aggregate: distinct_count
    field: user.name
    threshold: 3
  - id: admin-grant
    severity: high
    kind: match
    where:
      - {field: event.action, equals: role.assign}
      - {field: crm.changes.new, in: [admin]}
      - {field: crm.changes.new, not_equal_field: crm.changes.old}
    key: [user.name]
    suppression: 1h
"""

# What must fire, once each: (rule, key) -> live or backlog.
EXPECTED = {
    ("burst", "victim"): "live",
    ("spray", "10.0.0.66"): "live",
    ("iban-changes", "c-live"): "live",
    ("export-total", "exporter"): "live",
    ("admin-grant", "granter"): "live",
    ("burst", "old-victim"): "backlog",
    ("spray", "10.0.0.77"): "backlog",
    ("iban-changes", "c-old"): "backlog",
    ("export-total", "old-exporter"): "backlog",
    ("admin-grant", "old-granter"): "backlog",
}


def _line(when: datetime, user: str, event: str, outcome: str = "success", **extra: Any) -> str:
    record = {
        "timestamp": format_timestamp(when),
        "event": event,
        "outcome": outcome,
        "user": {"id": f"id-{user}", "name": user, "roles": ["advisor"]},
        "source_ip": "10.99.1.2",
        **extra,
    }
    return json.dumps(record) + "\n"


def _incidents(start: datetime, tag: str) -> tuple[list[str], list[str]]:
    """The lines of every incident (split over two agents), each just over its threshold,
    plus a near miss per rule that must not fire."""
    victim = "victim" if tag == "live" else "old-victim"
    spray_ip = "10.0.0.66" if tag == "live" else "10.0.0.77"
    customer = "c-live" if tag == "live" else "c-old"
    exporter = "exporter" if tag == "live" else "old-exporter"
    granter = "granter" if tag == "live" else "old-granter"
    at = [start + timedelta(seconds=i) for i in range(40)]
    fail = "failure"
    a = [_line(at[i], victim, "login", fail, source_ip="10.5.5.5") for i in range(3)]
    b = [_line(at[3 + i], victim, "login", fail, source_ip="10.5.5.5") for i in range(3)]
    a += [_line(at[10 + i], f"sprayed-{tag}-{i}", "login", fail, source_ip=spray_ip)
          for i in range(3)]  # fmt: skip

    def change(when: datetime, field: str, obj: str = customer) -> str:
        return _line(when, "clerk", "record.update",
                     object={"type": "customer", "id": obj},
                     changes=[{"field": field, "old": "old", "new": "new"}])  # fmt: skip

    b += [change(at[15], "iban"), change(at[16], "bic"), change(at[17], "iban")]
    b += [change(at[18], "email", f"{customer}-x"), change(at[19], "iban", f"{customer}-x")]
    a += [_line(at[20], exporter, "record.export", record_count=600,
                object={"type": "list", "id": "L1"}),
          _line(at[21], exporter, "record.export", record_count=500,
                object={"type": "list", "id": "L1"}),
          _line(at[22], "small-exporter", "record.export", record_count=900,
                object={"type": "list", "id": "L1"})]  # fmt: skip
    b += [_line(at[25], granter, "role.assign", object={"type": "user", "id": "u9"},
                changes=[{"field": "role", "old": "advisor", "new": "admin"}]),
          _line(at[26], "regranter", "role.assign", object={"type": "user", "id": "u8"},
                changes=[{"field": "role", "old": "admin", "new": "admin"}])]  # fmt: skip
    return a, b


@dataclass
class Env:
    root: Path
    url: str
    prefix: str
    client: OpenSearch
    procs: list[ManagedProcess]
    collectors: list[tuple[list[str], Path]]
    logs: dict[str, Path]

    def alerts(self, rule_id: str | None = None) -> list[dict[str, Any]]:
        index = f"{self.prefix}-alerts"
        if not self.client.indices.exists(index=index):
            return []
        self.client.indices.refresh(index=index)
        query: list[dict[str, Any]] = [{"term": {"alert.kind": "detection"}}]
        if rule_id:
            query.append({"term": {"alert.rule.id": rule_id}})
        hits = search_hits(self.client, index, {"size": 500, "query": {"bool": {"filter": query}}})
        return [h["_source"]["alert"] | {"_id": h["_id"]} for h in hits]

    def cursors(self) -> tuple[str, ...]:
        """Every windowed rule's ingestion cursor (changes with each evaluation)."""
        out = []
        for rule_id in ("burst", "iban-changes", "export-total", "spray"):
            doc = self.client.get(index=f"{self.prefix}-leases", id=f"rule:{rule_id}",
                                  ignore=(404, 503))  # fmt: skip
            out.append(str(doc.get("_source", {}).get("lease", {}).get("evaluated_to", "")))
        return tuple(out)

    def evaluated(self, times: int) -> None:
        """Wait until every windowed rule has been evaluated `times` more times."""
        seen: list[tuple[str, ...]] = [self.cursors()]

        def more() -> bool:
            now = self.cursors()
            # every rule's cursor moved since the last round counted
            if all(now) and all(a != b for a, b in zip(now, seen[-1], strict=True)):
                seen.append(now)
            return len(seen) > times

        wait_for(more, f"{times} more evaluations", timeout=120, watch=self.procs)

    def start_collectors(self) -> None:
        for argv, log in self.collectors:
            self.procs.append(ManagedProcess(argv, log))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CLI), *args, "--opensearch", self.url, "--prefix", self.prefix],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip


def _collector_yaml(root: Path, pki: Path, url: str, prefix: str, port: int) -> Path:
    return write_collector_config(
        root / f"collector-{port}.yaml",
        pki=pki,
        url=url,
        prefix=prefix,
        port=port,
        extra="""
            detection:
              rules: rules.yaml
              interval_s: 1
              lease_ttl_s: 5
              settle_s: 1
              reread_s: 3600  # every evaluation re-reads the whole test: repeats must not alert
              max_delay_s: 3600
        """,
    )


@pytest.fixture(scope="module")
def env(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("dettime")
    pki = root / "pki"
    init_ca(pki)
    prefix = f"dettime-{uuid.uuid4().hex[:8]}"
    (root / "rules.yaml").write_text(RULES, encoding="utf-8")
    client = OpenSearch(hosts=[opensearch_url], timeout=30)
    environment = Env(root, opensearch_url, prefix, client, [], [], {})
    try:
        for name in ("crm-a", "crm-b"):
            logdir = root / f"logs-{name}"
            logdir.mkdir()
            environment.logs[name] = logdir / "crm.jsonl"
            issue_agent(pki, name)
            port = free_port()
            cfg = _collector_yaml(root, pki, opensearch_url, prefix, port)
            environment.collectors.append(
                (["crm-audit-collector", "run", "-c", str(cfg)], root / f"c-{port}.log")
            )
            agent_cfg = write_jsonl_agent_config(
                root / f"agent-{name}.yaml",
                agent_id=name,
                state_dir=root / f"state-{name}",
                port=port,
                ca=pki / "ca.crt",
                cert=pki / "agents" / f"{name}.crt",
                key=pki / "agents" / f"{name}.key",
                glob=str(logdir / "*.jsonl"),
            )
            environment.procs.append(
                ManagedProcess(["crm-audit-agent", "run", "-c", str(agent_cfg)],
                               root / f"{name}.log")
            )  # fmt: skip
        environment.start_collectors()
        wait_for(lambda: all(environment.cursors()), "the rules' first evaluation",
                 timeout=120, watch=environment.procs)  # fmt: skip
        yield environment
    finally:
        for proc in reversed(environment.procs):
            proc.stop()
        drop_prefix(client, prefix)


def _write(env: Env, start: datetime, tag: str) -> None:
    lines_a, lines_b = _incidents(start, tag)
    for name, lines in (("crm-a", lines_a), ("crm-b", lines_b)):
        with env.logs[name].open("a", encoding="utf-8") as handle:
            handle.writelines(lines)


def _fired(env: Env) -> Counter[tuple[str, str]]:
    return Counter((a["rule"]["id"], a["key"]) for a in env.alerts())


def _expect(env: Env, tag: str) -> None:
    wanted = {k for k, v in EXPECTED.items() if v == tag}
    wait_for(lambda: wanted <= set(_fired(env)), f"the {tag} alerts", timeout=120,
             watch=env.procs)  # fmt: skip
    env.evaluated(3)  # more evaluations by either collector, re-reading everything
    fired = _fired(env)
    shipped = {k for k, v in EXPECTED.items() if v == "live" or tag == "backlog"}
    assert set(fired) == shipped, f"unexpected alerts: {set(fired) ^ shipped}"
    assert all(n == 1 for n in fired.values()), fired


def test_live_traffic_fires_each_rule_once_across_two_collectors(env: Env) -> None:
    started = time.monotonic()
    _write(env, NOW - timedelta(seconds=30), "live")
    _expect(env, "live")
    print(f"\nlive: every rule fired within {time.monotonic() - started:.1f}s")
    for alert in env.alerts():
        assert alert["late"] is False and alert["origin"] == "live"
        assert 0 <= alert["lag_s"] < 3600
    burst = env.alerts("burst")[0]
    # the burst went through both agents, so both collectors
    assert {i.split(":")[0] for i in burst["event_ids"]} == {"crm-a", "crm-b"}
    assert burst["event_count"] == 5


def test_days_old_backlog_fires_once_marked_late(env: Env) -> None:
    _write(env, NOW - timedelta(days=2, hours=12), "backlog")
    _expect(env, "backlog")
    for alert in env.alerts():
        old = EXPECTED[(alert["rule"]["id"], alert["key"])] == "backlog"
        assert alert["late"] is old, alert
        if old:
            assert alert["lag_s"] > 2 * 86400
            end = datetime.fromisoformat(alert["window"]["end"].replace("Z", "+00:00"))
            assert NOW - timedelta(days=3) < end < NOW - timedelta(days=2)


def test_restarted_collectors_raise_nothing_new(env: Env) -> None:
    before = {a["_id"] for a in env.alerts()}
    assert len(before) == len(EXPECTED)
    for proc in env.procs:
        if "crm-audit-collector" in proc.argv:
            proc.stop()
    env.procs[:] = [p for p in env.procs if "crm-audit-collector" not in p.argv]
    env.start_collectors()
    env.evaluated(3)
    assert {a["_id"] for a in env.alerts()} == before


def test_backfill_writes_nothing_twice(env: Env) -> None:
    span = ["--from", (NOW - timedelta(days=4)).isoformat(), "--to", datetime.now(UTC).isoformat()]
    rules = str(env.root / "rules.yaml")
    first = env.cli("rules", "backfill", "--rules", rules, *span)
    assert first.returncode == 0, first.stderr
    assert "backfill" in first.stdout and ": 0 new alert(s)" in first.stdout.splitlines()[-1]
    assert len(env.alerts()) == len(EXPECTED)
    # A rule the live collectors never had: its alerts are written once, marked backfill.
    extra = env.root / "rules-extra.yaml"
    extra.write_text(
        RULES
        + """
  - id: any-export
    kind: match
    where: [{field: event.action, equals: record.export}]
    key: [user.name]
    suppression: 7d
""",
        encoding="utf-8",
    )
    again = env.cli("rules", "backfill", "--rules", str(extra), "--rule", "any-export", *span)
    assert again.returncode == 0, again.stderr
    # small-exporter exported live and in the backlog, 2.5 days apart: one alert (7d)
    assert "any-export: 3 new alert(s), 0 already raised" in again.stdout
    written = env.alerts("any-export")
    assert sorted(a["key"] for a in written) == ["exporter", "old-exporter", "small-exporter"]
    assert all(a["origin"] == "backfill" for a in written)
    third = env.cli("rules", "backfill", "--rules", str(extra), *span)
    assert third.returncode == 0, third.stderr
    assert "any-export: 0 new alert(s)" in third.stdout
    assert len(env.alerts()) == len(EXPECTED) + 3


def test_rules_check_warns_about_fields_and_actions_no_event_has(env: Env) -> None:
    rules = env.root / "rules-check.yaml"
    rules.write_text(
        RULES
        + """
  - id: target-admin
    kind: match
    where:
      - {field: event.action, equals: user.role_change}
      - {field: user.target.roles, in: [admin]}
    key: [user.name]
""",
        encoding="utf-8",
    )
    checked = env.cli("rules", "check", "--rules", str(rules), "--days", "7")
    assert checked.returncode == 0, checked.stderr
    assert "rule target-admin: no event of the last 7 day(s) has field user.target.roles" in (
        checked.stderr
    )
    assert "has event.action 'user.role_change'" in checked.stderr
    assert "rule burst" not in checked.stderr and "rule iban-changes" not in checked.stderr
    strict = env.cli("rules", "check", "--rules", str(rules), "--strict")
    assert strict.returncode == 1 and "2 warning(s)" in strict.stdout
    plain = subprocess.run([str(CLI), "rules", "check", "--rules", str(rules)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert plain.returncode == 0 and "warning" not in plain.stderr
