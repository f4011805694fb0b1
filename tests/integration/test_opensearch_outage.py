"""OpenSearch stopped, then restarted: nothing lost, nothing duplicated.

Real parts only: a dedicated embedded OpenSearch node (not the session's cluster, since
this test stops it), a collector and an agent as processes, mTLS certificates from the
PKI helper. Lines are written before, during and after a ~10 s outage of OpenSearch; the
collector answers STATUS_RETRY meanwhile (it gives up on a batch after a few quick
retries, so the outage is seen on the wire) and the agent keeps everything in its
spool. The node restarts from the same home and port, its data intact. Every line must
then be in OpenSearch exactly once, and neither the collector nor the agent may exit.

Every wait is bounded; everything started is stopped and the node's home removed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from collector.admin.pki import init_ca, issue_agent
from tests.helpers import embedded_test_node, free_port, traversable_tmpdir
from tests.integration.support import (
    agent_config_head,
    agent_docs,
    count_docs,
    write_collector_config,
)
from tests.processes import ManagedProcess, wait_for

pytestmark = pytest.mark.integration

DONE = "test.done"
BEFORE, IN_FLIGHT, OUTAGE_SECONDS, PER_SECOND = 1000, 2000, 10, 200


def _log(message: str) -> None:
    print(f"[outage node] {message}", file=sys.stderr)


def line(n: int, action: str = "record.view") -> bytes:
    return json.dumps({"timestamp": 1772356500 + n % 86400, "event": action, "n": n}).encode()


def append(path: Path, numbers: range, action: str = "record.view") -> None:
    with path.open("ab") as out:
        out.write(b"".join(line(n, action) + b"\n" for n in numbers))


class Index:
    """Queries of one agent's documents under one index prefix."""

    def __init__(self, client: OpenSearch, prefix: str, agent_id: str) -> None:
        self.client = client
        self.prefix = prefix
        self.events = f"{prefix}-events-*"
        self.deadletter = f"{prefix}-deadletter*"
        self.agent_id = agent_id

    def count(self, action: str | None = None, index: str | None = None) -> int:
        target = index or self.events
        filters: list[dict[str, Any]] = [{"term": {"agent.id": self.agent_id}}]
        if action:
            filters.append({"term": {"event.action": action}})
        body = {"query": {"bool": {"filter": filters}}}
        return count_docs(self.client, target, body)

    def docs(self) -> list[dict[str, Any]]:
        return agent_docs(self.client, self.prefix, self.agent_id)


def assert_exactly_once(docs: list[dict[str, Any]], expected: set[int]) -> None:
    ids = [doc["_id"] for doc in docs]
    assert len(ids) == len(set(ids)), "a document _id appears twice"
    sequences = [doc["event"]["sequence"] for doc in docs]
    assert len(sequences) == len(set(sequences)), "an event.sequence appears twice"
    seen = [
        int(doc["crm"]["attributes"]["n"])
        for doc in docs
        if "n" in doc.get("crm", {}).get("attributes", {})
    ]
    counts: dict[int, int] = {}
    for n in seen:
        counts[n] = counts.get(n, 0) + 1
    duplicates = sorted(n for n, c in counts.items() if c > 1)
    assert not duplicates, f"duplicated lines: {duplicates[:20]}"
    missing = sorted(expected - set(seen))
    assert not missing, f"{len(missing)} lines missing, e.g. {missing[:20]}"
    assert len(docs) == len(expected), f"{len(docs)} documents for {len(expected)} lines"


def spooled_bytes(state: Path) -> int:
    return sum(p.stat().st_size for p in (state / "spool").glob("*.seg"))


def test_opensearch_stopped_then_restarted(tmp_path: Path) -> None:
    home = traversable_tmpdir("crm-audit-test-outage-")
    node = embedded_test_node(home / "node", log=_log)
    started: list[ManagedProcess] = []
    client: OpenSearch | None = None
    try:
        node.start(timeout=180)
        client = OpenSearch(hosts=[node.url], timeout=60)

        pki = tmp_path / "pki"
        init_ca(pki)
        prefix = f"outage-{uuid.uuid4().hex[:8]}"
        port = free_port()
        # Few, quick retries per batch: the outage reaches the agent as STATUS_RETRY
        # instead of being absorbed by the collector's own backoff.
        collector_yaml = write_collector_config(
            tmp_path / "collector.yaml",
            pki=pki,
            url=node.url,
            prefix=prefix,
            port=port,
            opensearch_extra="""
            request_timeout_s: 10
            max_retries: 2
            retry_backoff_s: 0.2
            retry_max_backoff_s: 0.5
            """,
        )
        # OPENSEARCH_URL (a shared cluster for the other tests) would override the
        # config's url: this collector must index into the node this test stops.
        own_cluster = {k: v for k, v in os.environ.items() if k != "OPENSEARCH_URL"}
        collector = ManagedProcess(
            ["crm-audit-collector", "run", "-c", str(collector_yaml)],
            tmp_path / "collector.log",
            env=own_cluster,
        )
        started.append(collector)

        agent_id = f"os-outage-{uuid.uuid4().hex[:6]}"
        issued = issue_agent(pki, agent_id)
        logs, state = tmp_path / "logs", tmp_path / "state"
        logs.mkdir()
        agent_yaml = tmp_path / "agent.yaml"
        agent_yaml.write_text(
            agent_config_head(
                agent_id=agent_id,
                state_dir=state,
                port=port,
                ca=pki / "ca.crt",
                cert=issued.cert,
                key=issued.key,
            )
            + f"""sources:
  - name: crm_app
    format: jsonlines
    paths: ["{logs}/*.jsonl"]
    poll_interval_s: 0.1
""",
            encoding="utf-8",
        )
        log_file = logs / "app.jsonl"
        index = Index(client, prefix, agent_id)

        append(log_file, range(BEFORE))
        agent = ManagedProcess(
            ["crm-audit-agent", "run", "-c", str(agent_yaml)], tmp_path / "a.log"
        )
        started.append(agent)
        both = [agent, collector]
        wait_for(lambda: index.count() >= BEFORE, "the first lines", timeout=120, watch=both)

        # More lines right before the stop, so batches are in flight when it goes away.
        total = BEFORE + IN_FLIGHT
        append(log_file, range(BEFORE, total))
        assert node.stop(), "the node was not running"
        # The first outage lines are written at once: whatever the agent shipped before
        # the node went away, these batches can only get STATUS_RETRY.
        append(log_file, range(total, total + PER_SECOND))
        total += PER_SECOND
        wait_for(
            lambda: "asked to retry" in agent.log(),
            "the agent to get STATUS_RETRY",
            timeout=90,
            watch=both,
        )
        spool_at_outage = spooled_bytes(state)  # nothing can be acked (and freed) from here
        for _ in range(OUTAGE_SECONDS):  # lines keep coming while OpenSearch is down
            time.sleep(1)
            append(log_file, range(total, total + PER_SECOND))
            total += PER_SECOND
            assert agent.alive(), agent.log()[-3000:]
            assert collector.alive(), collector.log()[-3000:]
        wait_for(
            lambda: spooled_bytes(state) > spool_at_outage,
            "the outage lines to be spooled",
            timeout=60,
            watch=both,
        )

        node.start(timeout=180)  # same home and port: the indexed data is still there
        append(log_file, range(total, total + 1), DONE)
        wait_for(
            lambda: index.count(DONE) >= 1 and index.count() >= total + 1,
            "every line after the restart",
            timeout=240,
            watch=both,
        )

        assert_exactly_once(index.docs(), set(range(total + 1)))
        assert index.count(index=index.deadletter) == 0, "documents were dead-lettered"
        assert agent.alive() and collector.alive()
        collector_log = collector.log()
        assert "not indexed" in collector_log, collector_log[-3000:]
        assert "internal error" not in collector_log, collector_log[-3000:]
        assert "Traceback" not in collector_log, collector_log[-3000:]
        agent_log = agent.log()
        assert "Traceback" not in agent_log, agent_log[-3000:]
        after_retry = agent_log.split("asked to retry", 1)[1]
        assert "delivering to" in after_retry, "the agent never reported delivering again"
        assert agent.stop() == 0, agent.log()[-3000:]
        assert collector.stop() == 0, collector.log()[-3000:]
    finally:
        for process in reversed(started):
            process.stop()
        if client is not None:
            client.close()
        node.stop()
        shutil.rmtree(home, ignore_errors=True)
