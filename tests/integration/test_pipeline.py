"""End to end with real parts only: agent and collector processes, real mTLS
certificates from the PKI helper, the real OpenSearch of the test session.

File lines → agent → mTLS gRPC → collector → OpenSearch documents.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from collector.admin.opensearch_node import ism_available
from collector.admin.pki import init_ca, issue_agent
from collector.admin.sample import generate, write_jsonl
from tests.helpers import free_port
from tests.integration.support import (
    count_docs,
    drop_prefix,
    write_collector_config,
    write_jsonl_agent_config,
)
from tests.processes import ManagedProcess, wait_for

pytestmark = pytest.mark.integration

AGENT_ID = "crm-host-1"
SAMPLE_COUNT = 400
MALFORMED = b'{"timestamp": "2026-11-27T10:00:00Z", "event": "login", "user": {"name": "broken'


@dataclass
class Pipeline:
    """A running collector and agent plus the paths a test needs."""

    root: Path
    pki: Path
    prefix: str
    client: OpenSearch
    collector: ManagedProcess
    agent: ManagedProcess
    agent_yaml: Path
    listen_port: int
    log_file: Path

    @property
    def events(self) -> str:
        return f"{self.prefix}-events-*"

    def count(self, query: dict[str, Any] | None = None) -> int:
        body = {"query": query} if query else None
        return count_docs(self.client, self.events, body)

    def search(self, query: dict[str, Any], size: int = 50) -> list[dict[str, Any]]:
        self.client.indices.refresh(index=self.events, ignore_unavailable=True)
        result = self.client.search(index=self.events, body={"query": query, "size": size})
        hits: list[dict[str, Any]] = result["hits"]["hits"]
        return hits


def _write_agent_config(
    directory: Path, *, agent_id: str, ca: Path, cert: Path, key: Path, port: int, glob: str
) -> Path:
    path = directory / f"agent-{uuid.uuid4().hex[:6]}.yaml"
    return write_jsonl_agent_config(
        path,
        agent_id=agent_id,
        state_dir=directory / f"state-{path.stem}",
        port=port,
        ca=ca,
        cert=cert,
        key=key,
        glob=glob,
    )


@pytest.fixture(scope="module")
def pipeline(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    root = tmp_path_factory.mktemp("pipeline")
    pki = root / "pki"
    init_ca(pki)
    issue_agent(pki, AGENT_ID)
    logs = root / "logs"
    logs.mkdir()
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    client = OpenSearch(hosts=[opensearch_url], timeout=30)
    port = free_port()
    collector_yaml = write_collector_config(
        root / "collector.yaml", pki=pki, url=opensearch_url, prefix=prefix, port=port
    )
    agent_yaml = _write_agent_config(
        root,
        agent_id=AGENT_ID,
        ca=pki / "ca.crt",
        cert=pki / "agents" / f"{AGENT_ID}.crt",
        key=pki / "agents" / f"{AGENT_ID}.key",
        port=port,
        glob=str(logs / "*.jsonl"),
    )
    collector = ManagedProcess(
        ["crm-audit-collector", "run", "-c", str(collector_yaml)], root / "collector.log"
    )
    agent = ManagedProcess(["crm-audit-agent", "run", "-c", str(agent_yaml)], root / "agent.log")
    log_file = logs / "crm-audit.jsonl"
    running = Pipeline(root, pki, prefix, client, collector, agent, agent_yaml, port, log_file)
    try:
        yield running
    finally:
        running.agent.stop()  # tests may have replaced the agent process
        collector.stop()
        drop_prefix(client, prefix)


def test_lines_become_searchable_documents(pipeline: Pipeline) -> None:
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    written = write_jsonl(pipeline.log_file, generate(count=SAMPLE_COUNT, seed=7, start=start))
    with pipeline.log_file.open("ab") as handle:
        handle.write(MALFORMED + b"\n")
    expected = written + 1
    wait_for(
        lambda: pipeline.count() >= expected,
        f"{expected} documents",
        timeout=120,
        watch=[pipeline.collector, pipeline.agent],
    )
    assert pipeline.count() == expected

    # Every document has the identity from the certificate and a deterministic id.
    hits = pipeline.search({"match_all": {}}, size=5)
    for hit in hits:
        source = hit["_source"]
        assert source["agent"]["id"] == AGENT_ID
        stream = source["agent"]["stream"]
        assert hit["_id"] == f"{AGENT_ID}:{stream}:{source['event']['sequence']}"

    # Field changes keep field, old and new value, queryable as nested documents.
    lines = [json.loads(line) for line in pipeline.log_file.read_text().splitlines()[:-1]]
    update = next(line for line in lines if line.get("changes"))
    change = update["changes"][0]
    found = pipeline.search(
        {
            "bool": {
                "filter": [
                    {"term": {"event.action": update["event"]}},
                    {"term": {"crm.object.id": update["object"]["id"]}},
                    {
                        "nested": {
                            "path": "crm.changes",
                            "query": {"term": {"crm.changes.field": change["field"]}},
                        }
                    },
                ]
            }
        }
    )
    assert found, f"no document for {update}"
    changes = [c for hit in found for c in hit["_source"]["crm"]["changes"]]
    assert {"field": change["field"], "old": change.get("old"), "new": change.get("new")} in [
        {"field": c["field"], "old": c.get("old"), "new": c.get("new")} for c in changes
    ]

    # Failed logins keep their outcome and actor.
    failures = [line for line in lines if line["event"] == "login" and line["outcome"] == "failure"]
    assert failures
    assert pipeline.count(
        {
            "bool": {
                "filter": [
                    {"term": {"event.action": "login"}},
                    {"term": {"event.outcome": "failure"}},
                ]
            }
        }
    ) == len(failures)

    # Exports carry their record counts.
    exports = [line for line in lines if line["event"] == "record.export"]
    assert exports
    biggest = max(line["record_count"] for line in exports)
    assert pipeline.count({"term": {"crm.record_count": biggest}}) >= 1

    # The malformed line is shipped, flagged, with the raw text kept.
    broken = pipeline.search({"term": {"integrity.flags": "parse_error"}})
    assert len(broken) == 1
    assert broken[0]["_source"]["event"]["original"] == MALFORMED.decode()


def test_redelivery_creates_no_duplicate(pipeline: Pipeline) -> None:
    """The agent forgets what was acked (its checkpoint and spool; its stream id stays)
    and sends everything again under the same ids: no new document.

    (Losing the whole state directory is another case: a new stream, see
    test_agent_state_loss.py.)"""
    before = pipeline.count()
    assert before > SAMPLE_COUNT, "run after test_lines_become_searchable_documents"
    pipeline.agent.stop()
    state_dir = pipeline.root / f"state-{pipeline.agent_yaml.stem}"
    assert (state_dir / "stream.json").is_file()
    checkpoint = state_dir / "checkpoint.json"
    checkpoint.unlink()
    shutil.rmtree(state_dir / "spool")
    pipeline.agent = ManagedProcess(
        ["crm-audit-agent", "run", "-c", str(pipeline.agent_yaml)], pipeline.root / "agent-2.log"
    )

    def resent_everything() -> bool:
        if not checkpoint.exists():
            return False
        return int(json.loads(checkpoint.read_text())["next_sequence"]) >= before

    wait_for(
        resent_everything, "the agent to re-ship every line", timeout=120, watch=[pipeline.agent]
    )
    assert pipeline.count() == before


def test_template_mapping_applies_to_new_index(pipeline: Pipeline) -> None:
    indices = pipeline.client.indices.get(index=pipeline.events)
    assert indices, "no event index was created"
    for name, index in indices.items():
        assert name.startswith(f"{pipeline.prefix}-events-standard-")
        mappings = index["mappings"]
        assert mappings["dynamic"] == "strict"
        crm = mappings["properties"]["crm"]["properties"]
        assert crm["changes"]["type"] == "nested"
        assert index["settings"]["index"]["codec"] == "best_compression"


ISM_MISSING = (
    "the ISM plugin (opensearch-index-management) is not installed on the test cluster: "
    "Maven Central does not serve it (see README, Retention)"
)


def test_ism_manages_new_indices(pipeline: Pipeline, opensearch_url: str) -> None:
    if not ism_available(opensearch_url):
        pytest.skip(reason=ISM_MISSING)
    for name in pipeline.client.indices.get(index=pipeline.events):
        explain = pipeline.client.transport.perform_request("GET", f"/_plugins/_ism/explain/{name}")
        assert explain[name]["index.plugins.index_state_management.policy_id"].startswith(
            pipeline.prefix
        )


@pytest.mark.parametrize("kind", ["foreign_ca", "expired"])
def test_untrusted_agent_is_refused(pipeline: Pipeline, kind: str) -> None:
    """An agent whose certificate is not from our CA, or expired, ships nothing."""
    name = f"rogue-{kind.replace('_', '-')}"
    if kind == "foreign_ca":
        foreign = pipeline.root / "foreign-pki"
        init_ca(foreign)
        issued = issue_agent(foreign, name)
    else:
        now = datetime.now(UTC)
        issued = issue_agent(
            pipeline.pki,
            name,
            not_before=now - timedelta(days=30),
            not_after=now - timedelta(days=1),
        )
    logs = pipeline.root / f"logs-{name}"
    logs.mkdir()
    write_jsonl(
        logs / "a.jsonl", generate(count=5, seed=1, start=datetime(2026, 11, 3, tzinfo=UTC))
    )
    config = _write_agent_config(
        pipeline.root,
        agent_id=name,
        ca=pipeline.pki / "ca.crt",
        cert=issued.cert,
        key=issued.key,
        port=pipeline.listen_port,
        glob=str(logs / "*.jsonl"),
    )
    rogue = ManagedProcess(
        ["crm-audit-agent", "run", "-c", str(config)], pipeline.root / f"{name}.log"
    )
    try:
        wait_for(
            lambda: "cannot connect" in rogue.log().lower() or "unavailable" in rogue.log().lower(),
            "the refused agent to log why it cannot connect",
            timeout=60,
            watch=[rogue],
        )
        assert rogue.alive(), "the agent must keep retrying, not exit"
    finally:
        rogue.stop()
    assert pipeline.count({"term": {"agent.id": name}}) == 0
    assert "Handshake failed" in pipeline.collector.log()
