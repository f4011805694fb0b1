"""Scale-out: any collector takes over any agent, because whatever
chain continuity needs lives in OpenSearch, and agents list several collectors.

Real parts only: a two-node OpenSearch cluster on loopback (this module's own: a node
is stopped), two collector processes each listing both nodes (in opposite order), two
agents listing both collectors (in opposite order), so each collector starts with one
agent, tailing logs that a writer thread fills at a steady rate. Mid-stream collector 1
is killed with SIGKILL; once agent 1 delivers through collector 2, node B is stopped
(SIGTERM) while lines keep coming. Then every line must be indexed exactly once (the
count and the set of sequences per agent), nothing dead-lettered, no integrity alert
raised, and `crm-audit verify` — given both node URLs, one of them down — must find
each agent's chain VALID from its first event to its last.

The cluster: node A is cluster manager + data + ingest, node B data + ingest only. Of
two cluster-manager-eligible nodes neither may go: electing a manager takes a majority
of the voting configuration, and one of two is none; surviving the loss of a
manager-eligible node takes three of them. So B, a data node, is the one stopped. The
collector's default replica setting (0-1) gives every index a copy on each node, so A
holds every shard once B is gone.

Every wait is bounded; the writer pauses (bounded) before each fault so that lines are
certainly written after it; everything started is stopped and the nodes' homes removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from collector.admin.opensearch_node import EmbeddedOpenSearch, defaults_from_env
from collector.admin.pki import init_ca, issue_agent
from tests.helpers import TEST_NODE_JAVA_OPTS, free_port, traversable_tmpdir
from tests.integration.support import (
    agent_config_head,
    agent_docs,
    count_docs,
    entry_of,
    write_collector_config,
)
from tests.processes import BIN, ManagedProcess, wait_for

pytestmark = pytest.mark.integration

LINES = 6_000  # per agent
PER_TICK, TICK_S = 24, 0.1  # 240 lines a second per agent: LINES in ~25 s
GATE_TIMEOUT_S = 120.0  # the longest the writer waits for a fault to be made


def _log(message: str) -> None:
    print(f"[scale-out] {message}", file=sys.stderr, flush=True)


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


@dataclass
class Cluster:
    """Node A (cluster manager, data) and node B (data only) of one cluster."""

    a: EmbeddedOpenSearch
    b: EmbeddedOpenSearch
    client: OpenSearch  # through node A, which stays up

    def nodes(self) -> int:
        return int(self.client.cluster.health()["number_of_nodes"])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    home = traversable_tmpdir("crm-audit-test-scale-")
    defaults = defaults_from_env(os.environ, os.geteuid())
    http_a, http_b, transport_a, transport_b = free_ports(4)
    common: dict[str, Any] = {
        "cluster.name": f"crm-audit-scale-{uuid.uuid4().hex[:6]}",
        "discovery.type": None,  # the single-node default would keep them apart
        "discovery.seed_hosts": [f"127.0.0.1:{transport_a}", f"127.0.0.1:{transport_b}"],
    }

    def node(name: str, http: int, transport: int, settings: dict[str, Any]) -> EmbeddedOpenSearch:
        return EmbeddedOpenSearch(
            home / name,
            http,
            cache_dir=defaults.cache_dir,
            java_home=defaults.java_home,
            run_as=defaults.run_as,
            log=_log,
            transport_port=transport,
            node_name=f"scale-{name}",
            settings={**common, **settings},
            java_opts=TEST_NODE_JAVA_OPTS,
        )

    a = node(
        "a",
        http_a,
        transport_a,
        {
            "node.roles": ["cluster_manager", "data", "ingest"],
            "cluster.initial_cluster_manager_nodes": ["scale-a"],
        },
    )
    b = node("b", http_b, transport_b, {"node.roles": ["data", "ingest"]})
    client = OpenSearch(hosts=[a.url], timeout=60)
    started = time.monotonic()
    try:
        # Both launched before either is waited for: B is ready only once it joined A.
        a.launch()
        b.launch()
        a.wait_ready(180)
        b.wait_ready(180)
        # given the request timeout, opensearch-py leaves the API's `timeout` alone
        health = client.transport.perform_request(
            "GET",
            "/_cluster/health",
            params={"wait_for_nodes": "2", "timeout": "60s"},
            timeout=70,
        )
        assert not health["timed_out"] and health["number_of_nodes"] == 2, health
        _log(f"two-node cluster up in {time.monotonic() - started:.0f} s")
        yield Cluster(a, b, client)
    finally:
        client.close()
        b.stop()
        a.stop()
        shutil.rmtree(home, ignore_errors=True)


def line(n: int) -> bytes:
    return json.dumps(
        {"timestamp": 1772356500 + n % 86400, "event": "record.view", "n": n}
    ).encode()


class Writer(threading.Thread):
    """Appends lines 0..LINES-1 to every file at a steady rate; before line `n` of each
    (n, gate) in `gates` it waits for the gate, so lines follow each fault for sure."""

    def __init__(self, files: Sequence[Path], gates: Sequence[tuple[int, threading.Event]]):
        super().__init__(name="scale-out-writer", daemon=True)
        self.files = files
        self.gates = list(gates)
        self.written = 0
        self.problem = ""
        self.stop_now = threading.Event()

    def run(self) -> None:
        outs = [path.open("ab") for path in self.files]
        try:
            tick = time.monotonic()
            while self.written < LINES and not self.stop_now.is_set():
                if self.gates and self.written >= self.gates[0][0]:
                    if not self.gates.pop(0)[1].wait(GATE_TIMEOUT_S):
                        self.problem = f"no fault made before line {self.written}"
                        return
                    tick = time.monotonic()
                upto = min(self.written + PER_TICK, LINES)
                chunk = b"".join(line(n) + b"\n" for n in range(self.written, upto))
                for out in outs:
                    out.write(chunk)
                    out.flush()
                self.written = upto
                tick += TICK_S
                time.sleep(max(0.0, tick - time.monotonic()))
        finally:
            for out in outs:
                out.close()


@dataclass
class Agent:
    """One agent: identity, its log file, its process (once started)."""

    id: str
    dir: Path
    yaml: Path
    log_file: Path
    process: ManagedProcess | None = None

    def start(self) -> ManagedProcess:
        self.process = ManagedProcess(
            ["crm-audit-agent", "run", "-c", str(self.yaml)], self.dir / "agent.log"
        )
        return self.process

    def log(self) -> str:
        return self.process.log() if self.process is not None else ""


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, check=False, timeout=300
    )


def make_agent(root: Path, pki: Path, keys: Path, name: str, ports: Sequence[int]) -> Agent:
    """An agent shipping to the collectors on `ports` in that order, its signing key
    created and registered as an operator does (`crm-audit-agent key`, `crm-audit keys
    register`), so both collectors check its seals."""
    agent_id = f"{name}-{uuid.uuid4().hex[:6]}"
    issued = issue_agent(pki, agent_id)
    home = root / agent_id
    (home / "logs").mkdir(parents=True)
    yaml = home / "agent.yaml"
    yaml.write_text(
        agent_config_head(
            agent_id=agent_id,
            state_dir=home / "state",
            port=ports,
            ca=pki / "ca.crt",
            cert=issued.cert,
            key=issued.key,
        )
        + f"""integrity: {{heartbeat_interval_s: 1}}
sources:
  - {{name: crm_app, format: jsonlines, paths: ["{home}/logs/*.jsonl"], poll_interval_s: 0.1}}
""",
        encoding="utf-8",
    )
    made = run_cli("crm-audit-agent", "key", "-c", str(yaml))
    assert made.returncode == 0, made.stderr
    public = re.search(r"^public key: (.+)$", made.stdout, re.M)
    assert public is not None, made.stdout
    registered = run_cli("crm-audit", "keys", "register", str(keys), agent_id, public.group(1))
    assert registered.returncode == 0, registered.stderr
    return Agent(agent_id, home, yaml, home / "logs" / "app.jsonl")


class Index:
    """What the cluster holds for one index prefix (queried through node A)."""

    def __init__(self, client: OpenSearch, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def count(self, pattern: str, agent_id: str | None = None) -> int:
        index = f"{self.prefix}-{pattern}"
        query = {"query": {"term": {"agent.id": agent_id}}} if agent_id else None
        return count_docs(self.client, index, query)

    def green(self) -> bool:
        """Whether every index of the prefix has all its copies (waits up to 60 s)."""
        health = self.client.transport.perform_request(
            "GET",
            f"/_cluster/health/{self.prefix}-*",
            params={"wait_for_status": "green", "timeout": "60s"},
            timeout=70,  # given, it leaves the API's `timeout` parameter alone
        )
        return health["status"] == "green" and not health["timed_out"]

    def copies_on(self, node: EmbeddedOpenSearch) -> list[str]:
        """The shard copies of the prefix's indices on `node`: "index (primary|replica)"."""
        rows = self.client.cat.shards(index=f"{self.prefix}-*", format="json")
        return sorted(
            f"{row['index'].removeprefix(self.prefix + '-')} "
            f"({'primary' if row['prirep'] == 'p' else 'replica'})"
            for row in rows
            if row.get("node") == node.node_name
        )

    def events(self, agent_id: str) -> int:
        return self.count("events-*", agent_id)

    def docs(self, agent_id: str) -> list[dict[str, Any]]:
        return agent_docs(
            self.client, self.prefix, agent_id, source=["event.sequence", "crm.attributes"]
        )


def assert_exactly_once(docs: list[dict[str, Any]], agent_id: str) -> None:
    ids = [doc["_id"] for doc in docs]
    assert len(ids) == len(set(ids)), f"{agent_id}: a document _id appears twice"
    sequences = sorted(int(doc["event"]["sequence"]) for doc in docs)
    assert sequences == list(range(1, LINES + 1)), (
        f"{agent_id}: sequences are not exactly 1..{LINES} once each "
        f"({len(sequences)} documents, {len(set(sequences))} distinct)"
    )
    lines = sorted(int(doc["crm"]["attributes"]["n"]) for doc in docs)
    assert lines == list(range(LINES)), f"{agent_id}: a line is missing or doubled"


def test_two_collectors_two_nodes_collector_killed_and_node_stopped_mid_stream(
    cluster: Cluster, tmp_path: Path
) -> None:
    root = tmp_path
    pki, keys = root / "pki", root / "keys"
    init_ca(pki)
    keys.mkdir()
    prefix = f"scale-{uuid.uuid4().hex[:8]}"
    index = Index(cluster.client, prefix)
    c1_port, c2_port = free_ports(2)
    node_urls = [cluster.a.url, cluster.b.url]
    # OPENSEARCH_URL (the other tests' cluster) would replace the configs' node lists.
    own_cluster = {k: v for k, v in os.environ.items() if k != "OPENSEARCH_URL"}
    processes: list[ManagedProcess] = []
    agents: list[Agent] = []
    writer: Writer | None = None
    try:
        collectors = []
        for number, (port, urls) in enumerate(
            ((c1_port, node_urls), (c2_port, node_urls[::-1])), start=1
        ):
            yaml = write_collector_config(
                root / f"collector-{number}.yaml",
                pki=pki,
                url=urls,
                prefix=prefix,
                port=port,
                extra="""
                integrity:
                  keys_dir: keys
                  require_seal: true
                """,
            )
            collector = ManagedProcess(
                ["crm-audit-collector", "run", "-c", str(yaml)],
                root / f"collector-{number}.log",
                env=own_cluster,
            )
            processes.append(collector)
            collectors.append(collector)
        c1, c2 = collectors
        for collector in collectors:
            wait_for(
                lambda c=collector: "collector listening" in c.log(),  # type: ignore[misc]
                "a collector to listen",
                timeout=60,
                watch=[collector],
            )

        a1 = make_agent(root, pki, keys, "scale-1", [c1_port, c2_port])
        a2 = make_agent(root, pki, keys, "scale-2", [c2_port, c1_port])
        agents += [a1, a2]
        for agent in agents:
            processes.append(agent.start())

        killed, node_stopping = threading.Event(), threading.Event()
        writer = Writer(
            [a1.log_file, a2.log_file], [(LINES // 3, killed), (2 * LINES // 3, node_stopping)]
        )
        started = time.monotonic()
        writer.start()

        # Each collector serves one agent before the faults: agents ship through both.
        wait_for(
            lambda: index.events(a1.id) >= LINES // 4 and index.events(a2.id) >= LINES // 4,
            "a quarter of each agent's lines",
            timeout=120,
            watch=processes,
        )
        assert f"stream opened: agent {a1.id}" in c1.log()
        assert f"stream opened: agent {a2.id}" in c2.log()
        assert f"agent {a1.id}" not in c2.log(), "agent 1 used collector 2 before the kill"

        c1.process.send_signal(signal.SIGKILL)
        c1.process.wait()
        c1.stop()  # closes its log
        at_kill = index.events(a1.id)
        killed.set()
        _log(f"collector 1 killed at {time.monotonic() - started:.1f} s, agent 1 at {at_kill}")

        assert a1.process is not None and a2.process is not None
        live = [a1.process, a2.process, c2]
        wait_for(
            lambda: (
                f"delivering to 127.0.0.1:{c2_port} again" in a1.log()
                and index.events(a1.id) >= at_kill + LINES // 10
            ),
            "agent 1 to deliver through collector 2",
            timeout=60,
            watch=live,
        )
        # Every index the collectors made has its copy on each node (replicas 0-1), so
        # node A holds every shard once B is gone.
        on_b = index.copies_on(cluster.b)
        assert index.green(), "an index of the collectors lacks its replica"
        before_stop = {agent.id: index.events(agent.id) for agent in agents}
        node_stopping.set()  # lines keep coming while node B shuts down
        stop_began = time.monotonic()
        assert cluster.b.stop(), "node B was not running"
        _log(
            f"node B stopped at {stop_began - started:.1f} s "
            f"(took {time.monotonic() - stop_began:.1f} s), indexed then: {before_stop}; "
            f"it held {on_b}"
        )
        wait_for(lambda: cluster.nodes() == 1, "the cluster to drop node B", timeout=60)

        wait_for(
            lambda: all(index.events(agent.id) >= LINES for agent in agents),
            f"all {LINES} lines of each agent",
            timeout=180,
            watch=live,
        )
        _log(f"every line indexed {time.monotonic() - started:.1f} s after the writer started")
        writer.join(timeout=GATE_TIMEOUT_S)
        assert not writer.problem, writer.problem
        assert writer.written == LINES

        for agent in agents:
            assert_exactly_once(index.docs(agent.id), agent.id)
            assert before_stop[agent.id] < LINES, "node B stopped after everything was in"
        assert at_kill < LINES, "collector 1 killed after everything was in"
        assert index.count("deadletter*") == 0, "documents were dead-lettered"
        alerts = index.count("alerts")
        assert alerts == 0, f"{alerts} integrity alerts (gap / fork / unknown start?)"

        # Agent 1 failed over: collector 1 died, collector 2 took its stream and chain.
        assert f"cannot ship to 127.0.0.1:{c1_port}" in a1.log()
        assert f"stream opened: agent {a1.id}" in c2.log()
        # Node B's stop reached no agent: collector 2's requests that met it went on to
        # node A at once (no batch was answered STATUS_RETRY), and it said so.
        assert f"OpenSearch node {cluster.b.url} does not answer" in c2.log()
        for agent in agents:
            assert "asked to retry" not in agent.log(), agent.log()[-3000:]
        for process in (c2, *live[:2]):
            assert "Traceback" not in process.log(), process.log()[-3000:]
        assert "internal error" not in c2.log(), c2.log()[-3000:]

        # The admin tool takes the cluster as both nodes' URLs: node B's is dead now.
        verified = run_cli(
            "crm-audit",
            "verify",
            "--opensearch",
            ",".join(node_urls),
            "--prefix",
            prefix,
            "--keys",
            str(keys),
            "--agent",
            a1.id,
            "--agent",
            a2.id,
            "--format",
            "json",
        )
        assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]
        report = json.loads(verified.stdout)
        for agent in agents:
            ranges = [
                (r["kind"], r["first"], r["last"]) for r in entry_of(report, agent.id)["ranges"]
            ]
            assert ranges == [("VALID", 1, LINES)], ranges

        for agent in agents:
            assert agent.process is not None
            assert agent.process.stop() == 0, agent.log()[-3000:]
        assert c2.stop() == 0, c2.log()[-3000:]
    finally:
        if writer is not None:
            writer.stop_now.set()
            writer.join(timeout=10)
        for process in reversed(processes):
            process.stop()
