"""Tamper evidence through the real agent: agent and collector processes, real mTLS
certificates, the real OpenSearch of the session, `crm-audit keys register` and
`crm-audit verify` as an operator runs them.

The agent's key is created by `crm-audit-agent key` and registered; the collector
requires seals. Sample lines are shipped, the agent is killed with SIGKILL mid-way and
restarted (its stream's heads are recomputed from the spool records past the acked
checkpoint: the collector alerts on gaps and forks), heartbeats go out while it idles.
The trail then verifies VALID end to end with no integrity alert, and an event altered
through the OpenSearch API is named.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from collector.admin.pki import issue_agent
from collector.admin.sample import generate, write_jsonl
from collector.checkpoints import read_checkpoints
from tests.integration.support import (
    agent_config_head,
    count_docs,
    entry_of,
    run_verify,
    sealing_collector,
)
from tests.processes import BIN, ManagedProcess, wait_for

pytestmark = pytest.mark.integration

AGENT_ID = "crm-sealed-1"
FIRST, SECOND = 400, 150
START = datetime(2026, 11, 4, 9, 0, tzinfo=UTC)


@dataclass
class Env:
    root: Path
    keys: Path
    checkpoints: Path
    prefix: str
    url: str
    client: OpenSearch
    collector: ManagedProcess
    agent_yaml: Path
    log_file: Path

    def refresh(self) -> None:
        self.client.indices.refresh(index=f"{self.prefix}-*", ignore_unavailable=True)

    def count(self, index: str, query: dict[str, Any] | None = None) -> int:
        body = {"query": query or {"term": {"agent.id": AGENT_ID}}}
        return count_docs(self.client, index, body)

    def events(self) -> int:
        return self.count(f"{self.prefix}-events-*")

    def start_agent(self, name: str) -> ManagedProcess:
        return ManagedProcess(
            ["crm-audit-agent", "run", "-c", str(self.agent_yaml)], self.root / f"{name}.log"
        )


@pytest.fixture(scope="module")
def env(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("agent-integrity")
    with sealing_collector(root, opensearch_url, "sealed") as site:
        issued = issue_agent(site.pki, AGENT_ID)
        logs = root / "logs"
        logs.mkdir()
        agent_yaml = root / "agent.yaml"
        agent_yaml.write_text(
            agent_config_head(
                agent_id=AGENT_ID,
                state_dir="state",
                port=site.port,
                ca=site.pki / "ca.crt",
                cert=issued.cert,
                key=issued.key,
                max_events=10,
                max_in_flight=2,
            )
            + """integrity: {heartbeat_interval_s: 0.5}
sources:
  - {name: crm_app, format: jsonlines, paths: ["logs/*.jsonl"], poll_interval_s: 0.1}
""",
            encoding="utf-8",
        )
        yield Env(
            root,
            site.keys,
            site.checkpoints,
            site.prefix,
            site.url,
            site.client,
            site.process,
            agent_yaml,
            logs / "crm-audit.jsonl",
        )


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, check=False, timeout=300
    )


def verify(env: Env) -> tuple[int, dict[str, Any]]:
    env.refresh()
    return run_verify(env.url, env.prefix, env.keys, env.checkpoints, AGENT_ID)


def ranges(report: dict[str, Any]) -> list[tuple[str, int, int]]:
    # The report names a format 2 stream "agent:stream"; this agent has one stream.
    (entry,) = [e for e in report["agents"].values() if e["agent"] == AGENT_ID]
    return [(r["kind"], r["first"], r["last"]) for r in entry["ranges"]]


def test_agent_trail_survives_kill9_and_verifies(env: Env) -> None:
    # The operator creates the agent's key and registers it on the collector side.
    made = run_cli("crm-audit-agent", "key", "-c", str(env.agent_yaml))
    assert made.returncode == 0, made.stderr
    public = Path(re.search(r"^public key: (.+)$", made.stdout, re.M).group(1))  # type: ignore[union-attr]
    key_id = re.search(r"^key id: ([0-9a-f]{64})$", made.stdout, re.M).group(1)  # type: ignore[union-attr]
    assert public.is_file()
    registered = run_cli("crm-audit", "keys", "register", str(env.keys), AGENT_ID, str(public))
    assert registered.returncode == 0, registered.stderr
    assert key_id in registered.stdout

    write_jsonl(env.log_file, generate(count=FIRST, seed=11, start=START))
    agent = env.start_agent("agent-1")
    try:
        wait_for(
            lambda: env.events() >= FIRST // 4,
            "the first events indexed",
            timeout=120,
            watch=[agent, env.collector],
        )
        assert public.as_posix() in agent.log()  # the public key path is logged at start
    finally:
        agent.process.kill()  # SIGKILL: no drain, spooled events past the acked head
        agent.stop()
    killed_at = env.events()
    state = env.agent_yaml.parent / "state"
    stream_id = json.loads((state / "stream.json").read_text())["stream_id"]
    acked = json.loads((state / "checkpoint.json").read_text())
    assert acked["stream_id"] == stream_id
    # No chain state is written per event: the heads past the acked checkpoint are
    # recomputed from the spool at the restart (stream format 1's chain.json is gone).
    assert not (state / "chain.json").exists()

    write_jsonl(
        env.log_file, generate(count=SECOND, seed=12, start=START.replace(hour=11)), append=True
    )
    total = FIRST + SECOND
    agent = env.start_agent("agent-2")
    try:
        wait_for(lambda: env.events() >= total, f"{total} events", timeout=180, watch=[agent])

        def checkpointed() -> bool:
            # The agent ships stream format 2: its heads are checkpointed per stream.
            head = read_checkpoints(env.checkpoints).streams.get((AGENT_ID, stream_id))
            return head is not None and head[0] == total

        wait_for(checkpointed, f"a collector checkpoint at {total}", watch=[env.collector])
        # Idle now: heartbeats go out (every 0.5 s) and must not raise alerts either.
        wait_for(
            lambda: (
                env.count(f"{env.prefix}-chainheads", {"exists": {"field": "chain.heartbeat"}}) >= 1
            ),
            "a heartbeat recorded with the chain head",
            timeout=30,
            watch=[agent],
        )
    finally:
        code = agent.stop()
    assert code == 0, agent.log()[-3000:]
    assert killed_at < total, "the kill must happen before everything was shipped"
    assert env.events() == total

    code, report = verify(env)
    assert code == 0, json.dumps(report, indent=1)[:6000]
    assert ranges(report) == [("VALID", 1, total)]
    assert env.count(f"{env.prefix}-alerts") == 0
    assert f"stream {stream_id} starting: next sequence {FIRST + 1}" in agent.log()

    # Tampering through the OpenSearch API is named.
    env.refresh()
    hits = env.client.search(
        index=f"{env.prefix}-events-*",
        body={"query": {"term": {"_id": f"{AGENT_ID}:{stream_id}:{FIRST - 7}"}}},
    )["hits"]["hits"]
    assert len(hits) == 1
    env.client.update(
        index=hits[0]["_index"], id=hits[0]["_id"], body={"doc": {"user": {"name": "mallory"}}}
    )
    code, report = verify(env)
    assert code == 1
    altered = [r for r in entry_of(report, AGENT_ID)["ranges"] if r["kind"] == "ALTERED"]
    assert [(r["first"], r["last"]) for r in altered] == [(FIRST - 7, FIRST - 7)]
    assert "user.name" in altered[0]["detail"]
