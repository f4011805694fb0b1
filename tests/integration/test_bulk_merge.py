"""Bulks merged across agents (group commit in collector.index): several agents ship
at once into one collector, which sends fewer _bulk requests than it answers batches,
and every record is stored exactly once.

Real parts only: the session's OpenSearch node, a sealing collector process (keys
registered, seals required, checkpoints) with its Prometheus endpoint, and AGENTS agent
processes over mTLS, each with its own certificate and signing key. Each agent first
ships one warm-up line (so all are connected), then a backlog of LINES lines is appended
to every agent's log at once, so their batches reach the collector together. Each batch
costs the collector two writes (its events, then its seal), so without merging the
_bulk requests would be at least twice the batches.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.admin.pki import issue_agent
from tests.helpers import free_port
from tests.integration.support import (
    SealingCollector,
    agent_config_head,
    agent_docs,
    count_docs,
    enroll,
    ranges,
    run_verify,
    sealing_collector,
)
from tests.processes import ManagedProcess, wait_for

pytestmark = pytest.mark.integration

AGENTS = 4
LINES = 1_500  # per agent, batches of 100


def line(n: int, agent: str) -> bytes:
    record = {"timestamp": "2026-11-05T10:00:00Z", "event": "record.view", "n": n, "who": agent}
    return json.dumps(record).encode() + b"\n"


def scrape(port: int) -> dict[str, float]:
    """Every sample of the collector's /metrics, by name with its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode("utf-8")
    samples: dict[str, float] = {}
    for row in text.splitlines():
        match = re.match(r"^(crm_audit_collector_\S+) (\S+)$", row)
        if match:
            samples[match.group(1)] = float(match.group(2))
    return samples


def total(samples: dict[str, float], name: str) -> float:
    """A counter summed over its labels."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


@pytest.fixture
def site(opensearch_url: str, tmp_path: Path) -> Iterator[tuple[SealingCollector, int]]:
    metrics_port = free_port()
    # One request slot: writes are merged once every slot is busy, here whenever a
    # write arrives while a bulk is in flight.
    with sealing_collector(
        tmp_path,
        opensearch_url,
        "merge",
        metrics_port=metrics_port,
        opensearch_extra="bulk_concurrency: 1",
    ) as site:
        yield site, metrics_port


def test_agents_batches_share_bulks_and_every_record_is_stored_once(
    site: tuple[SealingCollector, int], tmp_path: Path
) -> None:
    collector, metrics_port = site
    agents: list[tuple[str, Path, ManagedProcess]] = []
    try:
        for k in range(AGENTS):
            agent_id = f"merge-agent-{k}"
            issued = issue_agent(collector.pki, agent_id)
            home = tmp_path / agent_id
            logs = home / "logs"
            logs.mkdir(parents=True)
            (logs / "app.jsonl").write_bytes(line(-1, agent_id))  # the warm-up line
            yaml = home / "agent.yaml"
            yaml.write_text(
                agent_config_head(
                    agent_id=agent_id,
                    state_dir=home / "state",
                    port=collector.port,
                    ca=collector.pki / "ca.crt",
                    cert=issued.cert,
                    key=issued.key,
                    max_events=100,
                )
                + f'sources:\n  - {{name: crm_app, format: jsonlines, paths: ["{logs}/*.jsonl"],'
                " poll_interval_s: 0.1}\n",
                encoding="utf-8",
            )
            enroll(yaml, collector.keys, agent_id)
            process = ManagedProcess(
                ["crm-audit-agent", "run", "-c", str(yaml)], home / "agent.log"
            )
            agents.append((agent_id, logs / "app.jsonl", process))
        processes = [collector.process, *(a[2] for a in agents)]
        index = f"{collector.prefix}-events-*"

        def stored() -> int:
            return count_docs(collector.client, index)

        def idle() -> bool:
            """No batch being processed: every one answered (and counted) so far."""
            samples = scrape(metrics_port)
            return samples["crm_audit_collector_batches_in_flight"] == 0

        wait_for(lambda: stored() == AGENTS, "every agent's warm-up line", watch=processes)
        wait_for(idle, "the warm-up batches answered", watch=processes)
        before = scrape(metrics_port)
        for agent_id, log_file, _process in agents:
            with log_file.open("ab") as out:
                out.write(b"".join(line(n, agent_id) for n in range(LINES)))
        wait_for(
            lambda: stored() >= AGENTS * (LINES + 1),
            f"{AGENTS * LINES} lines stored",
            timeout=300,
            watch=processes,
        )
        # A batch is answered (and counted) after its events are searchable: its seal
        # and chain head come first.
        wait_for(idle, "the last batches answered", watch=processes)
        after = scrape(metrics_port)
    finally:
        for _agent_id, _log_file, process in agents:
            process.stop()

    # Every record once, by content, under its own agent; nothing dead-lettered.
    for agent_id, _log_file, _process in agents:
        docs = agent_docs(
            collector.client, collector.prefix, agent_id, source=["event.sequence", "crm"]
        )
        assert sorted(int(d["crm"]["attributes"]["n"]) for d in docs) == list(range(-1, LINES))
        assert {d["crm"]["attributes"]["who"] for d in docs} == {agent_id}
        assert sorted(int(d["event"]["sequence"]) for d in docs) == list(range(1, LINES + 2))
    deadletters = collector.client.count(
        index=f"{collector.prefix}-deadletter", ignore_unavailable=True
    )
    assert deadletters["count"] == 0

    # The batches of the backlog answered OK, in fewer _bulk requests than batches,
    # though each batch wrote twice (events, then its seal): requests were shared.
    batches = after['crm_audit_collector_batches_total{status="ok"}'] - before.get(
        'crm_audit_collector_batches_total{status="ok"}', 0.0
    )
    bulks = total(after, "crm_audit_collector_bulk_requests_total") - total(
        before, "crm_audit_collector_bulk_requests_total"
    )
    assert batches >= AGENTS * LINES / 100
    assert (
        total(after, "crm_audit_collector_batches_total")
        - total(before, "crm_audit_collector_batches_total")
        == batches
    )  # no retry, no rejection
    assert 0 < bulks < batches, f"{bulks:.0f} _bulk requests for {batches:.0f} batches"
    documents = after["crm_audit_collector_bulk_documents_sum"] - before.get(
        "crm_audit_collector_bulk_documents_sum", 0.0
    )
    assert documents / bulks > 100  # more than one batch's events per request on average
    assert after["crm_audit_collector_bulk_in_flight"] == 0

    # Seals written in shared bulks still make each agent's chain verify.
    for agent_id, _log_file, _process in agents:
        code, report = run_verify(
            collector.url, collector.prefix, collector.keys, collector.checkpoints, agent_id
        )
        assert code == 0, report
        assert ranges(report, agent_id) == [("VALID", 1, LINES + 1)]
