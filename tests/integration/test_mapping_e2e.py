"""A foreign-shaped CRM log onboarded with a mapping, end to end with real parts only:
file → agent (jsonlines + mapping + actions) → mTLS gRPC → collector → OpenSearch.

The stored documents must carry what the mapping says: canonical actions with their
categories, translated outcomes, the acting and the effective user (impersonation),
the target user with the granted role, the tenant, and changes whose numbers stay numbers
and whose nulls are absent — never the text "null".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from collector.admin.pki import init_ca, issue_agent
from tests.helpers import free_port
from tests.integration.support import (
    agent_config_head,
    count_docs,
    drop_prefix,
    write_collector_config,
)
from tests.processes import ManagedProcess, wait_for

pytestmark = pytest.mark.integration

AGENT_ID = "crm-host-7"

SOURCE = """\
sources:
  - name: acme_crm
    format: jsonlines
    paths: ["{glob}"]
    poll_interval_s: 0.1
    mapping:
      timestamp: ts
      user.id: actor.id
      user.name: actor.login
      user.roles: actor.roles
      user.effective.name: on_behalf_of.login
      user.target.name: subject.login
      user.target.roles: {{path: details.granted_role}}
      organization.id: tenant
      source.ip: client.ip
      object.type:
        path: entity.kind
        values: {{Contact: customer, Account: customer}}
        default: record
      object.id: entity.id
      outcome: {{path: result, values: {{ok: success, denied: failure, error: failure}}}}
      action:
        - {{when: {{op: auth.login, result: [denied, error]}}, const: auth.login_failed}}
        - op
      changes: {{path: changes, each: {{field: attr, old: from, new: to}}}}
      record_count: {{path: report.rows}}
    actions:
      auth.login: login
      auth.login_failed: login.failed
      report.export: record.export
      contact.update: record.update
      user.role_change: role.grant
"""

ACTOR = {"id": 4711, "login": "jdoe", "roles": ["advisor"]}
LINES: list[dict[str, Any]] = [
    {
        "ts": "2026-11-03T09:00:00Z",
        "op": "auth.login",
        "result": "denied",
        "actor": ACTOR,
        "tenant": "bank-eu",
        "client": {"ip": "192.0.2.10"},
    },
    {
        "ts": "2026-11-03T09:01:00Z",
        "op": "contact.update",
        "result": "ok",
        "actor": {"id": 9, "login": "helpdesk"},
        "on_behalf_of": {"login": "jdoe"},
        "tenant": "bank-eu",
        "entity": {"kind": "Contact", "id": "C-1"},
        "changes": [
            {"attr": "iban", "from": "DE00 1111", "to": "DE00 2222"},
            {"attr": "credit_limit", "from": 5000, "to": 7500},
            {"attr": "nickname", "from": None, "to": "Jürgen Müßig"},
            {"attr": "vip", "from": False, "to": True},
        ],
        "comment": None,
    },
    {
        "ts": "2026-11-03T09:02:00Z",
        "op": "user.role_change",
        "result": "ok",
        "actor": {"id": 1, "login": "admin"},
        "subject": {"login": "mmuster"},
        "details": {"granted_role": "branch_manager"},
        "tenant": "bank-eu",
    },
    {
        "ts": "2026-11-03T09:03:00Z",
        "op": "report.export",
        "result": "ok",
        "actor": ACTOR,
        "tenant": "bank-ch",
        "entity": {"kind": "Report", "id": "R-7"},
        "report": {"rows": 1200},
    },
]


@pytest.fixture
def shipped(opensearch_url: str, tmp_path: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """Ship LINES through real processes; the stored documents by event.action."""
    pki = tmp_path / "pki"
    init_ca(pki)
    issue_agent(pki, AGENT_ID)
    logs = tmp_path / "logs"
    logs.mkdir()
    prefix = f"map-{uuid.uuid4().hex[:8]}"
    client = OpenSearch(hosts=[opensearch_url], timeout=30)
    port = free_port()
    collector_yaml = write_collector_config(
        tmp_path / "collector.yaml", pki=pki, url=opensearch_url, prefix=prefix, port=port
    )
    agent_yaml = tmp_path / "agent.yaml"
    agent_yaml.write_text(
        agent_config_head(
            agent_id=AGENT_ID,
            state_dir=tmp_path / "state",
            port=port,
            ca=pki / "ca.crt",
            cert=pki / "agents" / f"{AGENT_ID}.crt",
            key=pki / "agents" / f"{AGENT_ID}.key",
        )
        + SOURCE.format(glob=logs / "*.jsonl"),
        encoding="utf-8",
    )
    (logs / "acme.jsonl").write_text(
        "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in LINES), encoding="utf-8"
    )
    collector = ManagedProcess(
        ["crm-audit-collector", "run", "-c", str(collector_yaml)], tmp_path / "collector.log"
    )
    agent = ManagedProcess(
        ["crm-audit-agent", "run", "-c", str(agent_yaml)], tmp_path / "agent.log"
    )
    index = f"{prefix}-events-*"

    def count() -> int:
        return count_docs(client, index)

    try:
        wait_for(
            lambda: count() >= len(LINES),
            f"{len(LINES)} documents",
            timeout=120,
            watch=[collector, agent],
        )
        hits = client.search(index=index, body={"query": {"match_all": {}}, "size": 50})
        docs = {hit["_source"]["event"]["action"]: hit["_source"] for hit in hits["hits"]["hits"]}
        assert len(docs) == len(LINES), sorted(docs)
        yield docs
    finally:
        agent.stop()
        collector.stop()
        drop_prefix(client, prefix)


def test_foreign_log_is_stored_as_the_mapping_says(shipped: dict[str, dict[str, Any]]) -> None:
    failed = shipped["login.failed"]
    assert failed["event"]["outcome"] == "failure"
    assert failed["event"]["category"] == ["authentication"]
    assert failed["audit"]["category"] == "security"
    assert (failed["user"]["id"], failed["user"]["name"]) == ("4711", "jdoe")
    assert failed["source"]["ip"] == "192.0.2.10"
    assert failed["organization"]["id"] == "bank-eu"
    assert failed["crm"]["object"]["type"] == "record"  # `default`: the log names no entity

    update = shipped["record.update"]
    assert update["user"]["name"] == "helpdesk"
    assert update["user"]["effective"]["name"] == "jdoe"
    assert update["crm"]["object"] == {"type": "customer", "id": "C-1"}
    assert update["audit"]["category"] == "data_operation"
    assert update["crm"]["changes"] == [
        {"field": "iban", "old": "DE00 1111", "new": "DE00 2222"},
        {"field": "credit_limit", "old": 5000, "new": 7500},
        {"field": "nickname", "new": "Jürgen Müßig"},
        {"field": "vip", "old": False, "new": True},
    ]

    grant = shipped["role.grant"]
    assert grant["user"]["target"]["name"] == "mmuster"
    assert grant["user"]["target"]["roles"] == ["branch_manager"]
    assert grant["audit"]["category"] == "system_admin"

    export = shipped["record.export"]
    assert export["crm"]["record_count"] == 1200
    assert export["crm"]["object"]["type"] == "Report"  # not in `values`: kept as it is
    assert export["organization"]["id"] == "bank-ch"

    for doc in shipped.values():
        flags = doc.get("integrity", {}).get("flags", [])
        assert not {"mapping_error", "unknown_action", "parse_error"} & set(flags), flags
        # event.original keeps the raw line; nothing else may hold a null as text
        stored = json.dumps({k: v for k, v in doc.items() if k != "event"}, ensure_ascii=False)
        assert '"null"' not in stored
        assert "null" not in doc.get("crm", {}).get("attributes", {}).values()
