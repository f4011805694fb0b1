"""A CRM log the project has never seen, onboarded with configuration only, end to end.

The Helvetia CRM log (tests/foreign_crm/generator.py: nested actors, `op` names,
`result: ok|denied|error`, `changes: [{attr, from, to}]`, impersonation, tenants,
non-ASCII values) goes through `crm-audit-agent parse --strict` and then the real agent,
collector (mTLS) and OpenSearch, with the mapping of tests/foreign_crm/agent-source.yaml
and the rules of tests/foreign_crm/rules.yaml. Every line must become a faithful document
(no mapping error, no unknown action, nothing left unmapped), every injected incident
must raise exactly one alert with its key, and ordinary traffic none — once shipped live
(event times now) and once as a backlog days old found by an agent starting with
`start_at: beginning`.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from collector.admin.pki import init_ca, issue_agent
from tests.foreign_crm.config import agent_yaml, differences, rules_yaml
from tests.foreign_crm.generator import ForeignLog, generate
from tests.helpers import free_port
from tests.integration.support import (
    agent_config_head,
    count_docs,
    drop_prefix,
    search_hits,
    write_collector_config,
)
from tests.processes import BIN, ManagedProcess, wait_for

pytestmark = pytest.mark.integration

AGENT = "helvetia-app-01"
SEED = 14
BAD_FLAGS = {"mapping_error", "unknown_action", "parse_error"}


class Cluster:
    """Reads of one test's indices."""

    def __init__(self, client: OpenSearch, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def count_events(self) -> int:
        return count_docs(self.client, f"{self.prefix}-events-*")

    def events(self) -> dict[str, dict[str, Any]]:
        result = self.client.search(
            index=f"{self.prefix}-events-*",
            body={
                "size": 10_000,
                "query": {"match_all": {}},
                "_source": {"excludes": ["integrity.canonical"]},
            },
        )
        return {h["_id"]: h["_source"] for h in result["hits"]["hits"]}

    def alerts(self) -> list[dict[str, Any]]:
        index = f"{self.prefix}-alerts"
        if not self.client.indices.exists(index=index):
            return []
        self.client.indices.refresh(index=index)
        hits = search_hits(
            self.client, index, {"size": 1000, "query": {"term": {"alert.kind": "detection"}}}
        )
        return [h["_source"]["alert"] for h in hits]

    def leases(self) -> dict[str, str]:
        """Each lease document's content: it changes whenever its rule is evaluated."""
        index = f"{self.prefix}-leases"
        if not self.client.indices.exists(index=index):
            return {}
        result = self.client.search(index=index, body={"size": 100}, ignore=(503,))
        hits = result.get("hits", {}).get("hits", [])
        return {h["_id"]: json.dumps(h["_source"], sort_keys=True) for h in hits}


def _parse_strict(agent_cfg: Path, log_file: Path, root: Path) -> None:
    """`crm-audit-agent parse --strict` on the log: exit 0, every line one event."""
    done = subprocess.run(
        [str(BIN / "crm-audit-agent"), "parse", "--strict", "-c", str(agent_cfg), str(log_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=root,
    )
    print(f"\nparse --strict summary:\n{done.stderr}")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(events) == log_file.read_text(encoding="utf-8").count("\n")
    assert not [e for e in events if set(e.get("flags", [])) & BAD_FLAGS]


def _run(opensearch_url: str, root: Path, log: ForeignLog, backlog: bool) -> None:
    pki = root / "pki"
    init_ca(pki)
    issue_agent(pki, AGENT)
    prefix = f"foreign-{uuid.uuid4().hex[:8]}"
    (root / "rules.yaml").write_text(rules_yaml(log), encoding="utf-8")
    port = free_port()
    collector_cfg = write_collector_config(
        root / "collector.yaml",
        pki=pki,
        url=opensearch_url,
        prefix=prefix,
        port=port,
        extra="detection: {rules: rules.yaml, interval_s: 1, lease_ttl_s: 5}",
    )
    logs = root / "logs"
    logs.mkdir()
    head = agent_config_head(
        agent_id=AGENT,
        state_dir=root / "state",
        port=port,
        ca=pki / "ca.crt",
        cert=pki / "agents" / f"{AGENT}.crt",
        key=pki / "agents" / f"{AGENT}.key",
    )
    agent_cfg = root / "agent.yaml"
    agent_cfg.write_text(agent_yaml(head, [str(logs / "audit-*.jsonl")]), encoding="utf-8")

    # What an admin runs before deploying: the whole log through the mapping, strictly.
    check = root / "check" / "audit-2026-12-06.jsonl"
    check.parent.mkdir()
    check.write_text(log.text(), encoding="utf-8")
    _parse_strict(agent_cfg, check, root)

    target = logs / "audit-2026-12-06.jsonl"
    if backlog:  # on disk before the agent's first start
        target.write_text(log.text(), encoding="utf-8")
    client = OpenSearch(hosts=[opensearch_url], timeout=30)
    cluster = Cluster(client, prefix)
    procs: list[ManagedProcess] = []
    started = time.monotonic()
    try:
        procs.append(
            ManagedProcess(
                ["crm-audit-collector", "run", "-c", str(collector_cfg)], root / "collector.log"
            )
        )
        procs.append(
            ManagedProcess(["crm-audit-agent", "run", "-c", str(agent_cfg)], root / "agent.log")
        )
        if not backlog:
            wait_for(lambda: bool(cluster.leases()), "detection to start", 60, watch=procs)
            # Appended while the agent runs, in a few writes.
            step = 500
            for first in range(0, len(log.lines), step):
                with target.open("a", encoding="utf-8") as handle:
                    handle.writelines(line + "\n" for line in log.lines[first : first + step])
                time.sleep(0.3)
        wait_for(
            lambda: cluster.count_events() == len(log.lines),
            f"all {len(log.lines)} events indexed",
            90,
            interval=0.5,
            watch=procs,
        )
        expected = Counter((i.rule_id, i.key) for i in log.incidents)

        def found() -> Counter[tuple[str, str]]:
            return Counter((a["rule"]["id"], a["key"]) for a in cluster.alerts())

        wait_for(
            lambda: set(found()) >= set(expected),
            "an alert for every incident",
            90,
            interval=0.5,
            watch=procs,
        )
        # Every rule evaluated at least twice more after that: late duplicates or alerts
        # on ordinary traffic would have shown up by then.
        changes: dict[str, set[str]] = {}

        def evaluated_again() -> bool:
            for name, state in cluster.leases().items():
                changes.setdefault(name, set()).add(state)
            return bool(changes) and all(len(s) >= 3 for s in changes.values())

        wait_for(evaluated_again, "two more evaluations of every rule", 60, watch=procs)
        print(f"\n{'backlog' if backlog else 'live'}: {time.monotonic() - started:.1f} s")
        alerts = cluster.alerts()
        got = Counter((a["rule"]["id"], a["key"]) for a in alerts)
        for rule_id, key in sorted(got):
            print(f"  alert {rule_id} key={key} x{got[(rule_id, key)]}")
        assert got == expected
        assert {a["origin"] for a in alerts} == {"live"}
        if backlog:  # each alert says it came from data two days late
            assert all(a["late"] and a["lag_s"] > 2 * 86400 for a in alerts)
        else:
            assert all(a["lag_s"] < 3600 for a in alerts)

        # Faithful documents: line i is event sequence i + 1 of the agent.
        documents = cluster.events()
        flagged = Counter(
            f for d in documents.values() for f in (d.get("integrity", {}).get("flags") or [])
        )
        assert not set(flagged) & BAD_FLAGS, flagged
        assert not [d for d in documents.values() if d.get("crm", {}).get("attributes")]
        # One agent stream: documents by their sequence (the `_id` is agent:stream:seq).
        by_sequence = {d["event"]["sequence"]: d for d in documents.values()}
        assert len(by_sequence) == len(documents)
        assert {i.split(":")[0] for i in documents} == {AGENT}
        wrong = []
        for index, line in enumerate(log.lines):
            document = by_sequence[index + 1]
            wrong += [f"line {index + 1}: {p}" for p in differences(document, json.loads(line))]
        assert not wrong, "\n".join(wrong[:20])
    finally:
        for proc in reversed(procs):
            proc.stop()
        drop_prefix(client, prefix)


def test_foreign_crm_log_shipped_live(opensearch_url: str, tmp_path: Path) -> None:
    # Event times of the last half hour, written while the agent runs.
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=31)
    _run(opensearch_url, tmp_path, generate(SEED, start), backlog=False)


def test_foreign_crm_log_as_a_days_old_backlog(opensearch_url: str, tmp_path: Path) -> None:
    # A host offline for over two days: its log is there before the agent first starts.
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=2, hours=12)
    _run(opensearch_url, tmp_path, generate(SEED, start), backlog=True)
