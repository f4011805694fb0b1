"""Every rule of config/rules.yaml against injected patterns in normal traffic, in a real
OpenSearch: each fires once per incident with the right key and evidence, never on the
normal traffic; suppression and allow-lists hold; the live service writes each alert once
(deterministic ids, state in the index) and its response hooks are recorded."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch, helpers

from collector.detect.alerts import Alert
from collector.detect.engine import Detection, Engine
from collector.detect.rules import RuleSet, load_rules
from collector.detect.search import Searcher
from collector.detect.settings import DetectionConfig
from collector.documents import index_name, iso_nanos
from collector.gate import alert_request, integrity_indices
from collector.index import OpenSearchHttp, make_client
from collector.lifecycle import LifecycleInstaller
from proto import integrity
from tests.collector.detect.scenario import (
    AGENT,
    RANGE_FROM,
    RANGE_TO,
    START,
    Scenario,
    build,
    build_documents,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
RULES = load_rules(REPO / "config" / "rules.yaml")
POLICY = json.loads((REPO / "config" / "opensearch" / "ism-standard.json").read_text())
NS = 1_000_000_000
FROM_NS = int(RANGE_FROM.timestamp()) * NS
TO_NS = int(RANGE_TO.timestamp()) * NS
INTEGRITY_AT = int(START.timestamp()) * NS + 110 * 60 * NS


@dataclass
class Loaded:
    client: OpenSearch
    http: OpenSearchHttp
    prefix: str
    scenario: Scenario


@pytest.fixture(scope="module")
def loaded(opensearch_url: str) -> Iterator[Loaded]:
    prefix = f"det-{uuid.uuid4().hex[:8]}"
    client = make_client(opensearch_url, timeout_s=30)
    http = OpenSearchHttp(client)
    LifecycleInstaller(
        http, prefix=prefix, policies={"standard": POLICY}, indices=integrity_indices(prefix)
    ).install()
    scenario = build()
    actions = []
    for doc in build_documents(scenario.records):
        # received a second after it happened (the live test below runs on event time)
        doc.source["event"]["ingested"] = iso_nanos(doc.timestamp_unix_nano + NS)
        index = index_name(prefix, "standard", "monthly", doc.timestamp_unix_nano)
        actions.append(
            {"_op_type": "create", "_index": index, "_id": doc.doc_id, "_source": doc.source}
        )
    # An integrity finding as collector.gate writes it (a chain gap of agent-x).
    finding = integrity.Finding("gap", 101, 150, "sequences 101-150 were never received")
    req = alert_request(
        prefix, "agent-x", finding, now_unix_nano=INTEGRITY_AT, batch_id=7, peer="p"
    )
    actions.append(
        {"_op_type": "create", "_index": req.index, "_id": req.doc_id, "_source": req.source}
    )
    ok, errors = helpers.bulk(client, actions, refresh=True)
    assert ok == len(actions) and not errors
    Searcher(http, prefix).ensure_mapping()
    try:
        yield Loaded(client, http, prefix, scenario)
    finally:
        client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)
        for template in (f"{prefix}-events", f"{prefix}-batches", f"{prefix}-deadletter"):
            client.transport.perform_request(
                "DELETE", f"/_index_template/{template}", params={"ignore": 404}
            )
        client.close()


def _dry_run(loaded: Loaded, rules: RuleSet = RULES) -> dict[str, list[Alert]]:
    return Engine(rules, Searcher(loaded.http, loaded.prefix)).dry_run(FROM_NS, TO_NS)


def _with(rule_id: str, **changes: Any) -> RuleSet:
    data = RULES.model_dump()
    for rule in data["rules"]:
        if rule["id"] == rule_id:
            rule.update(changes)
    return RuleSet.model_validate(data)


def test_each_rule_fires_once_per_incident_with_key_and_evidence(loaded: Loaded) -> None:
    found = _dry_run(loaded)
    scenario = loaded.scenario
    expected: dict[str, dict[str, set[str]]] = {}
    for incident in scenario.incidents:
        ids = {scenario.doc_id(i) for i in incident.records}
        expected.setdefault(incident.rule_id, {})[incident.key] = ids
    expected["integrity"] = {"agent-x": {"agent-x:101", "agent-x:150"}}
    assert set(found) == {rule.id for rule in RULES.enabled()}
    for rule_id, alerts in found.items():
        got = {a.key: a for a in alerts}
        assert len(got) == len(alerts), f"{rule_id} fired twice for one key: {alerts}"
        assert set(got) == set(expected.get(rule_id, {})), (
            f"{rule_id}: fired for {sorted(got)}, expected {sorted(expected.get(rule_id, {}))}"
            f" ({[a.reason for a in alerts]})"
        )
        for key, alert in got.items():
            assert set(alert.event_ids) == expected[rule_id][key], (rule_id, alert)
            assert alert.reason
            if rule_id == "integrity":  # anchored at the integrity alert it passes on
                assert alert.evidence["source_alert"] == alert.trigger_id
                assert alert.evidence["integrity_kind"] == "gap"
            else:
                assert alert.trigger_id in alert.event_ids


def test_normal_traffic_alone_raises_nothing(loaded: Loaded) -> None:
    # The same rules over the normal part only (the injected users are allow-listed).
    injected = sorted(
        {str(r["user"]["name"]) for r in loaded.scenario.records[loaded.scenario.normal :]}
    )
    data = RULES.model_dump()
    for rule in data["rules"]:
        rule["allow"] = {"users": injected, "ips": ["203.0.113.0/24"]}
        if rule["kind"] == "integrity":
            rule["enabled"] = False
    found = _dry_run(loaded, RuleSet.model_validate(data))
    assert {rid: [a.reason for a in alerts] for rid, alerts in found.items() if alerts} == {}


def test_suppression_period(loaded: Loaded) -> None:
    # Default (1 h): the second burst 30 min later is suppressed. 10 min: both alert.
    short = _dry_run(loaded, _with("failed-login-burst", suppression="10m"))
    bursts = [a for a in short["failed-login-burst"] if a.key == "v.burst"]
    assert len(bursts) == 2
    assert bursts[1].trigger - bursts[0].trigger >= 10 * 60 * NS


def test_allow_lists_for_users_and_cidrs(loaded: Loaded) -> None:
    rules = _with("failed-login-burst", allow={"users": ["v.burst"]})
    assert _dry_run(rules=rules, loaded=loaded)["failed-login-burst"] == []
    rules = _with("password-spray", allow={"ips": ["203.0.113.0/24"]})
    assert _dry_run(rules=rules, loaded=loaded)["password-spray"] == []


def test_rules_test_cli_dry_run_shows_alerts_and_writes_none(
    loaded: Loaded, opensearch_url: str
) -> None:
    cli = Path(sys.executable).parent / "crm-audit"
    argv = [
        str(cli), "rules", "test", "--rules", str(REPO / "config" / "rules.yaml"),
        "--opensearch", opensearch_url, "--prefix", loaded.prefix,
        "--from", RANGE_FROM.isoformat(), "--to", RANGE_TO.isoformat(),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "failed-login-burst: 1 alert(s)" in done.stdout
    assert "key=v.burst" in done.stdout and "key=203.0.113.66" in done.stdout
    as_json = subprocess.run(
        [*argv, "--format", "json", "--rule", "bulk-export"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    found = json.loads(as_json.stdout)
    assert list(found) == ["bulk-export"]
    assert [a["alert"]["key"] for a in found["bulk-export"]] == ["v.exporter"]
    loaded.client.indices.refresh(index=f"{loaded.prefix}-alerts")
    written = loaded.client.count(
        index=f"{loaded.prefix}-alerts", body={"query": {"term": {"alert.kind": "detection"}}}
    )
    assert written["count"] == 0


def test_live_service_writes_each_alert_once_and_records_the_response(
    loaded: Loaded, tmp_path: Path
) -> None:
    hook_out = tmp_path / "hook.json"
    data = RULES.model_dump()
    for rule in data["rules"]:
        if rule["id"] == "bulk-export":
            rule["response"] = {
                "command": {
                    "command": [
                        sys.executable,
                        "-c",
                        f"import sys; open({str(hook_out)!r}, 'w').write(sys.stdin.read())",
                    ],
                    "timeout_s": 30,
                }
            }
    rules = RuleSet.model_validate(data)
    clock = [FROM_NS]
    settings = DetectionConfig(interval_s=300, max_delay_s=600, lease_ttl_s=900)
    detection = Detection(
        rules, settings, loaded.http, loaded.prefix, holder="h1", clock_ns=lambda: clock[0]
    )
    detection.ensure_ready()
    detection.responder.start()
    # Inline rules as batches arrive, windowed ones every 5 simulated minutes.
    docs = [(d.doc_id, d.source) for d in build_documents(loaded.scenario.records)]
    docs.sort(key=lambda item: str(item[1]["@timestamp"]))
    for start in range(0, len(docs), 50):
        detection.on_indexed(docs[start : start + 50])
    while clock[0] <= TO_NS:
        detection.run_once()
        clock[0] += 300 * NS
    assert detection.responder.wait_idle(60)
    detection.responder.stop()

    def alerts(kind: str) -> list[dict[str, Any]]:
        loaded.client.indices.refresh(index=f"{loaded.prefix}-alerts")
        result = loaded.client.search(
            index=f"{loaded.prefix}-alerts",
            body={"size": 500, "query": {"term": {"alert.kind": kind}}},
        )
        return [h["_source"]["alert"] | {"_id": h["_id"]} for h in result["hits"]["hits"]]

    raised = alerts("detection")
    per_rule: dict[str, set[str]] = {}
    for alert in raised:
        per_rule.setdefault(alert["rule"]["id"], set()).add(alert["key"])
        assert alert["status"] == "open" and alert["event_ids"] and alert["window"]["end"]
    expected: dict[str, set[str]] = {"integrity": {"agent-x"}}
    for incident in loaded.scenario.incidents:
        expected.setdefault(incident.rule_id, set()).add(incident.key)
    assert per_rule == expected
    assert len(raised) == sum(len(v) for v in expected.values())

    # A restarted collector (no memory) evaluating everything again raises nothing new.
    again = Detection(rules, settings, loaded.http, loaded.prefix, holder="h2")
    for rule in rules.enabled():
        if not rule.inline:
            found = again.engine.windowed(rule, FROM_NS, TO_NS, again.searcher.alert_history)
            created = again.searcher.write_alerts([(a.alert_id, a.document(TO_NS)) for a in found])
            assert not any(created), rule.id
    assert again.on_indexed(docs) == []
    assert len(alerts("detection")) == len(raised)

    # The bulk export's command hook got the alert JSON; the action is on record.
    payload = json.loads(hook_out.read_text())
    assert payload["alert"]["rule"]["id"] == "bulk-export"
    assert payload["alert"]["key"] == "v.exporter"
    responses = [r for r in alerts("response") if r["rule"]["id"] == "bulk-export"]
    assert len(responses) == 1
    assert responses[0]["response"]["action"] == "response.command"
    assert responses[0]["response"]["outcome"] == "success"
    assert responses[0]["response"]["alert_id"] == payload["id"]
    assert AGENT  # documents came from the scenario agent
