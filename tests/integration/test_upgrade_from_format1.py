"""An agent upgraded in place from stream format 1 with its state: real collector and
agent processes, real mTLS, the session's OpenSearch, `crm-audit verify` as an operator
runs it.

Main has no format 1 agent any more, so the format 1 side is what such an agent left,
built with the format 1 producers kept in `agent.sealing` (signing key in state_dir,
`Chainer`, `seal`): 300 lines of the log file are shipped as sealed format 1 batches
over mTLS to the real collector, and the state directory holds what the format 1 agent
wrote after their acks (a version 2 checkpoint at the end of those lines, chain.json at
the last sequence). Then 200 more lines are written and the real format 2 agent starts
on that state. Expected: every line in OpenSearch exactly once (counted by content),
the new stream's sequence 1 the signed `agent.stream_continued` event, no
`agent_restarted_without_state` alert (the collector logs the move), and `crm-audit
verify` exit 0 with the note "continues format 1 history ended at 300".
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.checkpoint import Checkpoint, CheckpointStore, FileOffset
from agent.sealing import PUBLIC_KEY_FILE, AgentKey, Chainer, seal
from agent.tail.reader import file_key
from collector.admin.pki import issue_agent
from proto.continuation import STREAM_CONTINUED
from proto.v1 import audit_pb2 as pb
from proto.v1 import audit_pb2_grpc as pb_grpc
from tests.integration.support import (
    SealingCollector,
    agent_docs,
    count_docs,
    run_verify,
    sealing_collector,
    search_hits,
    write_tailing_agent_config,
)
from tests.processes import BIN, ManagedProcess, wait_for

pytestmark = pytest.mark.integration

V1_LINES = 300
V2_LINES = 200
BATCH = 50
BASE_TIME = 1772356500


@dataclass(frozen=True)
class Env(SealingCollector):
    agent_id: str
    log_file: Path
    agent_yaml: Path
    state: Path
    cert: Path
    key: Path

    def count(self) -> int:
        body = {"query": {"term": {"agent.id": self.agent_id}}}
        return count_docs(self.client, f"{self.prefix}-events-*", body)

    def events(self) -> list[dict[str, Any]]:
        return agent_docs(self.client, self.prefix, self.agent_id)

    def alerts(self) -> list[dict[str, Any]]:
        self.refresh()
        hits = search_hits(
            self.client,
            f"{self.prefix}-alerts",
            {"size": 100, "query": {"term": {"agent.id": self.agent_id}}},
        )
        return [hit["_source"] for hit in hits]


@pytest.fixture(scope="module")
def env(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("upgrade")
    with sealing_collector(root, opensearch_url, "upgrade") as site:
        agent_id = f"crm-upgraded-{uuid.uuid4().hex[:6]}"
        logs, state = root / "logs", root / "state"
        logs.mkdir()
        issued = issue_agent(site.pki, agent_id)
        agent_yaml = write_tailing_agent_config(
            root / "agent.yaml", site, agent_id, issued, state_dir=state, logs=logs
        )
        yield Env(
            **vars(site),
            agent_id=agent_id,
            log_file=logs / "crm.jsonl",
            agent_yaml=agent_yaml,
            state=state,
            cert=issued.cert,
            key=issued.key,
        )


def write_lines(path: Path, first: int, count: int) -> None:
    with path.open("ab") as out:
        for n in range(first, first + count):
            record = {"timestamp": BASE_TIME + n, "event": "record.view", "n": n}
            out.write(json.dumps(record).encode() + b"\n")


def format1_history(env: Env) -> bytes:
    """Ship the log file's lines as a format 1 agent did and leave its state behind;
    the format 1 chain head at the last sequence."""
    key = AgentKey.load_or_create(env.state)  # the key the upgraded agent keeps using
    registered = subprocess.run(
        [
            str(BIN / "crm-audit"),
            "keys",
            "register",
            str(env.keys),
            env.agent_id,
            str(env.state / PUBLIC_KEY_FILE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert registered.returncode == 0, registered.stderr
    chainer = Chainer.load(env.state, env.agent_id)
    batches = []
    for first in range(1, V1_LINES + 1, BATCH):
        events = []
        for n in range(first, min(first + BATCH, V1_LINES + 1)):
            event = pb.AuditEvent(
                sequence=n,
                time_unix_nano=(BASE_TIME + n) * 10**9,
                action="record.view",
                original=json.dumps({"timestamp": BASE_TIME + n, "event": "record.view", "n": n}),
                attributes={"n": str(n)},
            )
            event.observer.agent_id = env.agent_id
            event.log.file_path = str(env.log_file)
            event.log.source_name = "crm_app"
            event.log.format = "jsonlines"
            chainer.link(event)
            events.append(event)
        batch = pb.Batch(batch_id=len(batches) + 1, agent_id=env.agent_id, events=events)
        seal(batch, key, now_unix_nano=(BASE_TIME + first) * 10**9)
        batches.append(batch)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(env.pki / "ca.crt").read_bytes(),
        private_key=env.key.read_bytes(),
        certificate_chain=env.cert.read_bytes(),
    )
    with grpc.secure_channel(f"127.0.0.1:{env.port}", credentials) as channel:
        acks = list(pb_grpc.CollectorStub(channel).Ship(iter(batches), timeout=60))
    assert [a.status for a in acks] == [pb.Ack.STATUS_OK] * len(batches), acks
    # What the format 1 agent wrote after the last ack: chain.json, and its version 2
    # checkpoint (no stream, no head) with the file position after the shipped lines.
    chainer.save()
    stat = env.log_file.stat()
    position = FileOffset(str(env.log_file), stat.st_size, "")
    CheckpointStore(env.state).save(Checkpoint(V1_LINES + 1, {file_key(stat): position}))
    path = env.state / "checkpoint.json"
    data = json.loads(path.read_text())
    data["version"] = 2
    del data["stream_id"], data["head"]
    path.write_text(json.dumps(data))
    return chainer.head


def checkpointed(env: Env, label: str, sequence: int) -> bool:
    for path in env.checkpoints.glob("checkpoints-*.jsonl"):
        for raw in path.read_bytes().splitlines():
            line = json.loads(raw)
            attested = line.get("streams", {}).get(label) or line.get("heads", {}).get(label)
            if isinstance(attested, dict) and attested.get("sequence") == sequence:
                return True
    return False


def test_an_upgrade_with_its_state_continues_the_format_1_history(env: Env) -> None:
    write_lines(env.log_file, 1, V1_LINES)
    v1_head = format1_history(env)
    write_lines(env.log_file, V1_LINES + 1, V2_LINES)

    agent = ManagedProcess(
        ["crm-audit-agent", "run", "-c", str(env.agent_yaml)], env.root / "agent.log"
    )
    total = V1_LINES + 1 + V2_LINES  # the format 2 stream's first event is the continuation
    try:
        wait_for(
            lambda: env.count() >= total,
            f"{total} events stored",
            timeout=180,
            watch=[agent, env.process],
        )
    finally:
        code = agent.stop()
    assert code == 0, agent.log()[-3000:]

    docs = env.events()
    assert len(docs) == total
    counts = Counter(
        int(d["crm"]["attributes"]["n"])
        for d in docs
        if "n" in d.get("crm", {}).get("attributes", {})
    )
    assert sorted(counts) == list(range(1, V1_LINES + V2_LINES + 1))
    assert set(counts.values()) == {1}
    v2 = [d for d in docs if d["agent"].get("stream")]
    (stream,) = {d["agent"]["stream"] for d in v2}
    (continued,) = [d for d in v2 if d["event"]["action"] == STREAM_CONTINUED]
    assert continued["_id"] == f"{env.agent_id}:{stream}:1"
    assert continued["crm"]["attributes"] == {
        "previous_format": "1",
        "previous_sequence": str(V1_LINES),
        "previous_head": v1_head.hex(),
    }
    assert sorted(d["event"]["sequence"] for d in v2) == list(range(1, V2_LINES + 2))
    assert not (env.state / "chain.json").exists()

    assert env.alerts() == []
    assert (
        f"agent {env.agent_id} moved from stream format 1 (ended at {V1_LINES}) to stream "
        f"{stream}" in env.process.log()
    )

    wait_for(
        lambda: checkpointed(env, f"{env.agent_id}:{stream}", V2_LINES + 1),
        "a signed checkpoint of the new stream",
        watch=[env.process],
    )
    code, report = run_verify(env.url, env.prefix, env.keys, env.checkpoints, env.agent_id)
    assert code == 0, report
    entries = {e["stream_id"]: e for e in report["agents"].values()}
    assert sorted(entries) == sorted(["", stream])
    assert [(r["kind"], r["first"], r["last"]) for r in entries[""]["ranges"]] == [
        ("VALID", 1, V1_LINES)
    ]
    assert [(r["kind"], r["first"], r["last"]) for r in entries[stream]["ranges"]] == [
        ("VALID", 1, V2_LINES + 1)
    ]
    assert entries[stream]["stream"] == []
    assert entries[stream]["notes"] == [f"continues format 1 history ended at {V1_LINES}"]
