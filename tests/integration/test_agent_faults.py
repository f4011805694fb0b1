"""Faults against real parts: agent and collector processes, mTLS certificates from the
PKI helper, the session's OpenSearch. Every record written must be in OpenSearch
exactly once (unique `n` per line, document count = unique count), across rotation,
kill -9, a collector outage, a full spool and a file deleted mid-read — except lines in
copytruncate windows, which must be covered by the `agent.log_truncated` event.

Each test uses its own agent identity, so its documents are told apart by agent.id.
Loops are bounded; every process started is stopped.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from collector.admin.pki import init_ca, issue_agent
from proto import limits
from tests.helpers import free_port, tmpfs
from tests.integration.support import (
    agent_config_head,
    agent_docs,
    count_docs,
    write_collector_config,
)
from tests.processes import BIN, ManagedProcess, wait_for

pytestmark = pytest.mark.integration

DONE = "test.done"
RSS_BOUND_MIB = 256  # the bound stated for default batch settings (measured ~85 MiB)


def rss_mib(process: ManagedProcess) -> float:
    status = Path(f"/proc/{process.process.pid}/status").read_text()
    (line,) = [x for x in status.splitlines() if x.startswith("VmRSS:")]
    return int(line.split()[1]) / 1024


@dataclass
class Env:
    """A collector (restartable) and what tests need to run agents against it."""

    root: Path
    pki: Path
    prefix: str
    port: int
    collector_yaml: Path
    client: OpenSearch
    collector: ManagedProcess
    restarts: int = 0
    url: str = ""

    @property
    def events(self) -> str:
        return f"{self.prefix}-events-*"

    def start_collector(self) -> None:
        self.restarts += 1
        self.collector = ManagedProcess(
            ["crm-audit-collector", "run", "-c", str(self.collector_yaml)],
            self.root / f"collector-{self.restarts}.log",
        )

    def docs(self, agent_id: str) -> list[dict[str, Any]]:
        return agent_docs(self.client, self.prefix, agent_id)

    def count(self, agent_id: str, action: str | None = None) -> int:
        filters: list[dict[str, Any]] = [{"term": {"agent.id": agent_id}}]
        if action:
            filters.append({"term": {"event.action": action}})
        body = {"query": {"bool": {"filter": filters}}}
        return count_docs(self.client, self.events, body)


@pytest.fixture(scope="module")
def env(opensearch_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("faults")
    pki = root / "pki"
    init_ca(pki)
    prefix = f"faults-{uuid.uuid4().hex[:8]}"
    port = free_port()
    collector_yaml = write_collector_config(
        root / "collector.yaml", pki=pki, url=opensearch_url, prefix=prefix, port=port
    )
    client = OpenSearch(hosts=[opensearch_url], timeout=60)
    collector = ManagedProcess(
        ["crm-audit-collector", "run", "-c", str(collector_yaml)], root / "collector-0.log"
    )
    running = Env(root, pki, prefix, port, collector_yaml, client, collector, url=opensearch_url)
    try:
        yield running
    finally:
        running.collector.stop()
        client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)
        for template in (f"{prefix}-events", f"{prefix}-batches", f"{prefix}-deadletter"):
            client.transport.perform_request(
                "DELETE", f"/_index_template/{template}", params={"ignore": 404}
            )
        client.close()


class Agent:
    """One agent identity with its config, log directory and (re)startable process."""

    def __init__(
        self,
        env: Env,
        name: str,
        extra: str = "",
        glob: str = "*.jsonl",
        *,
        port: int | None = None,
        source_extra: str = "",
    ) -> None:
        self.env = env
        self.id = f"{name}-{uuid.uuid4().hex[:6]}"
        issued = issue_agent(env.pki, self.id)
        self.dir = env.root / self.id
        self.logs = self.dir / "logs"
        self.logs.mkdir(parents=True)
        self.state = self.dir / "state"
        self.yaml = self.dir / "agent.yaml"
        self.yaml.write_text(
            agent_config_head(
                agent_id=self.id,
                state_dir=self.state,
                port=port or env.port,
                ca=env.pki / "ca.crt",
                cert=issued.cert,
                key=issued.key,
            )
            + f"""{extra}
sources:
  - name: crm_app
    format: jsonlines
    paths: ["{self.logs}/{glob}"]
    poll_interval_s: 0.1
    close_rotated_after_s: 1.0
{source_extra}""",
            encoding="utf-8",
        )
        self.runs = 0
        self.process: ManagedProcess | None = None

    def start(self) -> ManagedProcess:
        self.runs += 1
        self.process = ManagedProcess(
            ["crm-audit-agent", "run", "-c", str(self.yaml)], self.dir / f"agent-{self.runs}.log"
        )
        return self.process

    def kill9(self) -> None:
        assert self.process is not None
        self.process.process.send_signal(signal.SIGKILL)
        self.process.process.wait()
        self.process.stop()

    def stop(self) -> None:
        if self.process is not None:
            code = self.process.stop()
            assert code in (0, -signal.SIGKILL), self.process.log()[-3000:]

    def log(self) -> str:
        return "".join(
            (self.dir / f"agent-{i}.log").read_text(errors="replace")
            for i in range(1, self.runs + 1)
        )


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    made: list[Agent] = []
    yield made
    for agent in made:
        if agent.process is not None:
            agent.process.stop()


def line(n: int, action: str = "record.view") -> bytes:
    return json.dumps({"timestamp": 1772356500 + n % 86400, "event": action, "n": n}).encode()


def numbers(docs: list[dict[str, Any]]) -> list[int]:
    return [
        int(doc["crm"]["attributes"]["n"])
        for doc in docs
        if "n" in doc.get("crm", {}).get("attributes", {})
    ]


def assert_exactly_once(env: Env, agent: Agent, expected: set[int]) -> list[dict[str, Any]]:
    docs = env.docs(agent.id)
    ids = [doc["_id"] for doc in docs]
    assert len(ids) == len(set(ids))
    seen = numbers(docs)
    counts: dict[int, int] = {}
    for n in seen:
        counts[n] = counts.get(n, 0) + 1
    duplicates = sorted(n for n, c in counts.items() if c > 1)
    assert not duplicates, f"duplicated lines: {duplicates[:20]}"
    missing = sorted(expected - set(seen))
    assert not missing, f"{len(missing)} lines missing, e.g. {missing[:20]}"
    return docs


def wait_done(env: Env, agent: Agent, at_least: int = 0, timeout: float = 240) -> None:
    """Until the DONE line and at least `at_least` documents are in (bounded)."""
    assert agent.process is not None
    wait_for(
        lambda: env.count(agent.id, DONE) >= 1 and env.count(agent.id) >= at_least,
        f"agent {agent.id} to deliver its last line",
        timeout=timeout,
        watch=[agent.process, env.collector],
    )


def test_kill9_during_shipping_three_times(env: Env, agents: list[Agent]) -> None:
    agent = Agent(env, "kill9", extra="spool: {max_bytes: 8388608, segment_bytes: 262144}")
    agents.append(agent)
    files = [agent.logs / f"{name}.jsonl" for name in ("a", "b", "c")]
    total = 18_000
    handles = [f.open("ab") for f in files]
    try:
        for n in range(total // 2):  # three files growing together
            handles[n % 3].write(line(n) + b"\n")
        for h in handles:
            h.flush()
        agent.start()
        for round_ in range(3):
            target = (round_ + 1) * total // 8
            wait_for(
                lambda target=target: env.count(agent.id) >= target,  # type: ignore[misc]
                f"{target} documents before kill {round_ + 1}",
                timeout=180,
                watch=[agent.process] if agent.process else [],
            )
            agent.kill9()
            # The files keep growing while the agent is down.
            start = total // 2 + round_ * total // 6
            for n in range(start, start + total // 6):
                handles[n % 3].write(line(n) + b"\n")
            for h in handles:
                h.flush()
            agent.start()
        handles[0].write(line(total, DONE) + b"\n")
    finally:
        for h in handles:
            h.close()
    wait_done(env, agent, total + 1)
    agent.stop()
    docs = assert_exactly_once(env, agent, set(range(total + 1)))
    assert len(docs) == total + 1
    assert "starting: next sequence" in agent.log()


def test_rotation_under_write_load(env: Env, agents: list[Agent]) -> None:
    """rename+create and copytruncate alternate while lines are written."""
    agent = Agent(env, "rotate", glob="app.jsonl")
    agents.append(agent)
    agent.start()
    path = agent.logs / "app.jsonl"
    total, per_generation = 20_000, 2_500
    # n -> (generation, byte offset in that generation); generation -> how it ended
    where: dict[int, tuple[int, int]] = {}
    ended: list[str] = []
    out = path.open("ab")
    generation = 0
    try:
        for n in range(total):
            where[n] = (generation, out.tell())
            out.write(line(n) + b"\n")
            if n % 50 == 49:
                out.flush()
            if n % per_generation == per_generation - 201:
                out.flush()
                first = n + 201 - per_generation
                # The agent has seen this generation (else nothing could be reported);
                # the 200 lines still to come make a window it likely has not read.
                wait_for(
                    lambda first=first: first in numbers(env.docs(agent.id)),  # type: ignore[misc]
                    f"line {first} to be delivered",
                    timeout=120,
                    watch=[agent.process] if agent.process else [],
                )
            if n % per_generation == per_generation - 1 and n + 1 < total:
                out.flush()
                out.close()
                if generation % 2 == 0:
                    path.rename(agent.logs / f"app.jsonl.{generation}")
                    ended.append("rename")
                else:
                    shutil.copyfile(path, agent.logs / f"app.jsonl.{generation}")
                    with path.open("r+b") as truncate:
                        truncate.truncate(0)
                    ended.append("copytruncate")
                generation += 1
                out = path.open("ab")
        out.write(line(total, DONE) + b"\n")
        where[total] = (generation, 0)
    finally:
        out.close()
    ended.append("live")
    wait_done(env, agent)
    agent.stop()

    docs = env.docs(agent.id)
    ids = [doc["_id"] for doc in docs]
    assert len(ids) == len(set(ids))
    seen = numbers(docs)
    assert len(seen) == len(set(seen)), "a line was delivered twice"
    truncations = sorted(
        (doc for doc in docs if doc["event"]["action"] == "agent.log_truncated"),
        key=lambda doc: doc["event"]["sequence"],
    )
    copytruncated = [g for g, how in enumerate(ended) if how == "copytruncate"]
    assert len(truncations) == len(copytruncated)
    read_offset = {
        g: int(doc["crm"]["attributes"]["truncation.read_offset"])
        for g, doc in zip(copytruncated, truncations, strict=True)
    }
    for doc in truncations:
        assert "log_truncated" in doc["integrity"]["flags"]
    missing = set(where) - set(seen)
    for n in sorted(missing):
        gen, offset = where[n]
        assert ended[gen] == "copytruncate", f"line {n} lost in a {ended[gen]} generation"
        assert offset >= read_offset[gen], f"line {n} lost before the reported window"
    assert len(set(seen)) == len(where) - len(missing)
    # The copy stays beside the file: the agent reads the window from it. Nothing is
    # written between copy and truncation here, so nothing may be missing at all.
    for doc in truncations:
        assert doc["crm"]["attributes"]["truncation.copy"].startswith(str(agent.logs))
    assert not missing, f"{len(missing)} lines missed although the copies were there"


def test_collector_down_then_up(env: Env, agents: list[Agent]) -> None:
    agent = Agent(env, "outage")
    agents.append(agent)
    log_file = agent.logs / "app.jsonl"
    log_file.write_bytes(b"".join(line(n) + b"\n" for n in range(1000)))
    agent.start()
    wait_for(lambda: env.count(agent.id) >= 1000, "first 1000", timeout=120)
    env.collector.stop()
    try:
        with log_file.open("ab") as out:
            for n in range(1000, 4000):
                out.write(line(n) + b"\n")
        assert agent.process is not None
        wait_for(
            lambda: "cannot ship to" in agent.log(),
            "the agent to notice the outage",
            timeout=60,
            watch=[agent.process],
        )
        for _ in range(10):  # about 10 s of outage, the agent retrying meanwhile
            assert agent.process.alive()
            time.sleep(1)
    finally:
        env.start_collector()  # later tests need it, whatever happened here
    with log_file.open("ab") as out:
        out.write(line(4000, DONE) + b"\n")
    wait_done(env, agent)
    agent.stop()
    docs = assert_exactly_once(env, agent, set(range(4001)))
    assert len(docs) == 4001


def test_spool_full_pauses_reading_and_resumes(env: Env, agents: list[Agent]) -> None:
    agent = Agent(env, "full", extra="spool: {max_bytes: 65536, segment_bytes: 16384}")
    agents.append(agent)
    env.collector.stop()
    try:
        log_file = agent.logs / "app.jsonl"
        # The spool may overshoot max_bytes by one read pass (agent/spool.py, "Bounds"):
        # the log must be far larger than bound + pass for the pause to be visible.
        total = 20000
        log_file.write_bytes(b"".join(line(n) + b"\n" for n in range(total)))
        process = agent.start()
        wait_for(
            lambda: "spool full" in agent.log(), "reading to pause", timeout=120, watch=[process]
        )
        spool = agent.state / "spool"

        def spooled_bytes() -> int:
            return sum(p.stat().st_size for p in spool.glob("*.seg"))

        first = spooled_bytes()
        time.sleep(1.0)
        assert spooled_bytes() == first, "the spool grew while full"
        # Far less than the file: the rest waits on disk, in the log file.
        assert first < log_file.stat().st_size
        assert rss_mib(process) < RSS_BOUND_MIB
    finally:
        env.start_collector()  # later tests need it, whatever happened here
    with log_file.open("ab") as out:
        out.write(line(total, DONE) + b"\n")
    wait_done(env, agent)
    agent.stop()
    assert "reading resumed" in agent.log()
    docs = assert_exactly_once(env, agent, set(range(total + 1)))
    assert len(docs) == total + 1


def test_file_deleted_after_partial_read_is_read_to_its_end(env: Env, agents: list[Agent]) -> None:
    agent = Agent(env, "deleted")
    agents.append(agent)
    log_file = agent.logs / "app.jsonl"
    log_file.write_bytes(b"".join(line(n) + b"\n" for n in range(100)))
    process = agent.start()
    wait_for(lambda: env.count(agent.id) >= 100, "the first part", timeout=120, watch=[process])
    with log_file.open("ab") as out:
        out.write(b"".join(line(n) + b"\n" for n in range(100, 5000)))
    log_file.unlink()  # before the agent could read the rest
    (agent.logs / "next.jsonl").write_bytes(line(5000, DONE) + b"\n")
    wait_done(env, agent, 5001)
    agent.stop()
    docs = assert_exactly_once(env, agent, set(range(5001)))
    assert len(docs) == 5001


def content_numbers(docs: list[dict[str, Any]]) -> list[int]:
    """`n` of every document, from its parsed attributes or, for an event cut to fit
    (parsed fields dropped), from the start of its original line."""
    out = []
    for doc in docs:
        attributes = doc.get("crm", {}).get("attributes", {})
        if "n" in attributes:
            out.append(int(attributes["n"]))
            continue
        found = re.match(r'\{"n": (\d+),', doc.get("event", {}).get("original", ""))
        if found:
            out.append(int(found.group(1)))
    return out


@pytest.fixture
def small_collector(env: Env) -> Iterator[int]:
    """A second collector on the same OpenSearch that takes at most 50 events a batch."""
    port = free_port()
    config = write_collector_config(
        env.root / f"collector-small-{port}.yaml",
        pki=env.pki,
        url=env.url,
        prefix=env.prefix,
        port=port,
        extra="server: {max_events_per_batch: 50}",
    )
    process = ManagedProcess(
        ["crm-audit-collector", "run", "-c", str(config)], env.root / f"collector-{port}.log"
    )
    try:
        yield port
    finally:
        process.stop()


def test_oversized_records_and_refused_batches_do_not_block(
    env: Env, agents: list[Agent], small_collector: int
) -> None:
    """A record whose event is over the wire limit, a line over max_line_bytes, and
    batches of 500 against a collector taking 50: every line arrives exactly once."""
    agent = Agent(
        env,
        "limits",
        port=small_collector,
        source_extra=f"    max_line_bytes: {limits.MAX_LINE_BYTES}\n",
    )
    agents.append(agent)
    big_event, big_line, total = 300, 600, 1200
    sizes: dict[int, int] = {}
    with (agent.logs / "app.jsonl").open("wb") as out:
        for n in range(total):
            if n == big_event:  # a valid line under the line limit; parsed, twice as big
                record = {"n": n, "timestamp": 1772356500, "event": "x", "blob": "b" * (3 << 20)}
                data = json.dumps(record).encode()
            elif n == big_line:  # over max_line_bytes: cut at the tail, then to fit
                data = json.dumps({"n": n, "blob": "c" * (5 << 20)}).encode()
            else:
                data = json.dumps({"n": n, "timestamp": 1772356500 + n, "event": "r"}).encode()
            sizes[n] = len(data)
            out.write(data + b"\n")
        out.write(line(total, DONE) + b"\n")
    agent.start()
    wait_done(env, agent, total + 1, timeout=180)
    agent.stop()
    docs = env.docs(agent.id)
    seen = content_numbers(docs)
    assert sorted(seen) == list(range(total + 1)), "a line is missing or duplicated"
    by_n = dict(zip(content_numbers(docs), docs, strict=True))
    for n in (big_event, big_line):
        doc = by_n[n]
        assert "line_truncated" in doc["integrity"]["flags"]
        assert doc["crm"]["attributes"]["line.original_bytes"] == str(sizes[n])
        assert len(doc["event"]["original"].encode()) <= limits.MAX_EVENT_BYTES
    assert "line_truncated" not in by_n[big_event + 1]["integrity"].get("flags", [])
    # The collector refused batches of 500 and the agent split them.
    assert "as too large; split in two" in agent.log()


def _write(path: Path, numbers_: range) -> dict[int, int]:
    """Append lines `numbers_` to `path`; n → byte offset of its line."""
    offsets = {}
    with path.open("ab") as out:
        for n in numbers_:
            offsets[n] = out.tell()
            out.write(line(n) + b"\n")
    return offsets


@pytest.mark.parametrize("rotation", ["rename", "copytruncate", "dated"])
def test_rotation_while_the_agent_is_stopped(env: Env, agents: list[Agent], rotation: str) -> None:
    """500 lines read, agent stopped, 500 more written, the file rotated, 500 written to
    the new file, agent started: all 1501 lines arrive exactly once."""
    agent = Agent(env, f"down-{rotation}", glob="audit*.jsonl")
    agents.append(agent)
    live = agent.logs / "audit.jsonl"
    _write(live, range(500))
    agent.start()
    wait_for(lambda: env.count(agent.id) >= 500, "the first 500", timeout=120)
    agent.stop()
    _write(live, range(500, 1000))
    rotated = agent.logs / ("audit.jsonl-20261206" if rotation == "dated" else "audit.jsonl.1")
    if rotation == "copytruncate":
        shutil.copyfile(live, rotated)
        with live.open("r+b") as truncate:
            truncate.truncate(0)
    else:
        live.rename(rotated)
    _write(live, range(1000, 1500))
    with live.open("ab") as out:
        out.write(line(1500, DONE) + b"\n")
    agent.start()
    wait_done(env, agent, 1501, timeout=120)
    agent.stop()
    docs = assert_exactly_once(env, agent, set(range(1501)))
    assert len(docs) == 1501
    assert "while the agent was stopped" in agent.log()


@pytest.mark.parametrize("fate", ["compressed", "deleted"])
def test_rotated_file_gone_while_the_agent_is_stopped_is_reported(
    env: Env, agents: list[Agent], fate: str
) -> None:
    """The rotated file was compressed (or deleted) before the agent came back: what it
    could not read is reported by an `agent.log_unread` event naming the byte range;
    every other line arrives exactly once."""
    agent = Agent(env, f"gone-{fate}", glob="audit*.jsonl")  # matches neither .1 nor .gz
    agents.append(agent)
    live = agent.logs / "audit.jsonl"
    _write(live, range(500))
    agent.start()
    wait_for(lambda: env.count(agent.id) >= 500, "the first 500", timeout=120)
    agent.stop()
    offsets = _write(live, range(500, 1000))
    size = live.stat().st_size
    if fate == "compressed":
        with gzip.open(agent.logs / "audit.jsonl.1.gz", "wb") as packed:
            packed.write(live.read_bytes())
    live.unlink()
    _write(live, range(1000, 1500))
    with live.open("ab") as out:
        out.write(line(1500, DONE) + b"\n")
    agent.start()
    wait_done(env, agent, 1001, timeout=120)
    agent.stop()
    # Deleted, the new file may get the old inode: indistinguishable from a truncation.
    reported = {"agent.log_unread"} | ({"agent.log_truncated"} if fate == "deleted" else set())
    unread = [d for d in env.docs(agent.id) if d["event"]["action"] in reported]
    assert len(unread) == 1, unread
    attributes = unread[0]["crm"]["attributes"]
    start = int(attributes["unread.from_offset"])
    end = f"{size}" if fate == "compressed" else "end"
    assert attributes["unread.bytes"] == f"{start}-{end}"
    assert "gap_at_source" in unread[0]["integrity"]["flags"]
    lost = {n for n, offset in offsets.items() if offset >= start}
    assert lost == set(range(500, 1000)), "the agent had read nothing after its stop"
    docs = assert_exactly_once(env, agent, set(range(1501)) - lost)
    assert not lost & set(numbers(docs))


def padded(n: int) -> bytes:
    """A line that compresses badly, so a few thousand of them fill a small disk (the
    spool compresses a read pass as one frame: hex digests still cost 4 bits a char)."""
    pad = "".join(hashlib.sha256(f"{n}:{i}".encode()).hexdigest() for i in range(32))
    record = {"timestamp": 1772356500 + n % 86400, "event": "record.view", "n": n, "pad": pad}
    return json.dumps(record).encode()


def agent_status(agent: Agent) -> str:
    done = subprocess.run(
        [str(BIN / "crm-audit-agent"), "status", "-c", str(agent.yaml)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs), mounted for the test and removed after it."""
    with tmpfs(tmp_path / "small-disk", "size=4m,mode=0700") as mount:
        yield mount


def test_full_state_disk_pauses_then_recovers_by_itself(
    env: Env, agents: list[Agent], small_disk: Path
) -> None:
    """state_dir on a 4 MiB tmpfs, collector down: the spool fills the disk and reading
    pauses; the rest of the disk is then taken by something else. The agent restarts
    on the full disk, status says so, and once the collector is back every line
    arrives exactly once — the checkpoint is written in the released reserve and the
    acked segments free the disk."""
    agent = Agent(env, "disk", extra="spool: {max_bytes: 67108864, segment_bytes: 262144}")
    agents.append(agent)
    state = small_disk / "state"
    agent.yaml.write_text(
        agent.yaml.read_text().replace(f"state_dir: {agent.state}", f"state_dir: {state}")
    )
    total = 6000
    env.collector.stop()
    try:
        (agent.logs / "app.jsonl").write_bytes(b"".join(padded(n) + b"\n" for n in range(total)))
        process = agent.start()
        wait_for(
            lambda: "No space left on device" in agent.log(),
            "the spool to fill the disk",
            timeout=120,
            watch=[process],
        )
        with contextlib.suppress(OSError), (small_disk / "filler").open("wb") as filler:
            while True:  # whatever room is left goes to another writer
                filler.write(bytes(4096))
                filler.flush()
        assert "paused: state disk full" in agent_status(agent)
        agent.kill9()
        process = agent.start()  # on the full disk
        wait_for(
            lambda: agent.log().count("starting: next sequence") >= 2,
            "the agent to start on the full disk",
            timeout=60,
            watch=[process],
        )
        time.sleep(2)
        assert process.alive(), agent.log()[-3000:]
    finally:
        env.start_collector()  # later tests need it, whatever happened here
    with (agent.logs / "app.jsonl").open("ab") as out:
        out.write(line(total, DONE) + b"\n")
    wait_done(env, agent, total + 1, timeout=180)
    agent.stop()
    log = agent.log()
    assert "reserve released" in log
    assert "paused: state disk full" not in agent_status(agent)
    docs = assert_exactly_once(env, agent, set(range(total + 1)))
    assert len(docs) == total + 1


def register_key(agent: Agent, keys: Path) -> None:
    """What an operator does at (re-)enrollment: create the key, register it."""
    made = subprocess.run(
        [str(BIN / "crm-audit-agent"), "key", "-c", str(agent.yaml)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    public = agent.state / "signing-key.pub"
    registered = subprocess.run(
        [str(BIN / "crm-audit"), "keys", "register", str(keys), agent.id, str(public)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert registered.returncode == 0, registered.stderr


def test_agent_state_lost_starts_a_new_stream_and_nothing_is_dropped(
    env: Env, agents: list[Agent]
) -> None:
    """The host is reinstalled: state_dir gone (stream id, checkpoint, spool, key), the
    logs start afresh, a new key is registered. The new incarnation numbers from 1 again
    in a new stream, so its ids cannot collide with the first stream's: every line of
    both is indexed exactly once, and the collector, which checks seals against the
    registered keys, says once that the agent restarted without state."""
    keys = env.root / "stateloss-keys"
    keys.mkdir()
    port = free_port()
    collector_yaml = write_collector_config(
        env.root / "stateloss-collector.yaml",
        pki=env.pki,
        url=env.url,
        prefix=env.prefix,
        port=port,
        extra=f"""
        integrity:
          keys_dir: {keys}
          require_seal: true
        """,
    )
    collector = ManagedProcess(
        ["crm-audit-collector", "run", "-c", str(collector_yaml)],
        env.root / "stateloss-collector.log",
    )
    try:
        agent = Agent(env, "stateloss", port=port)
        agents.append(agent)
        first, second = 1000, 1000
        log_file = agent.logs / "audit.jsonl"
        log_file.write_bytes(b"".join(line(n) + b"\n" for n in range(first)))
        register_key(agent, keys)
        agent.start()
        wait_for(
            lambda: env.count(agent.id) >= first,
            f"{first} documents of the first stream",
            timeout=180,
            watch=[p for p in (agent.process, collector) if p is not None],
        )
        agent.stop()
        old_stream = json.loads((agent.state / "stream.json").read_text())["stream_id"]
        shutil.rmtree(agent.state)  # state lost with the host
        log_file.unlink()  # the reinstalled host writes fresh logs
        log_file.write_bytes(
            b"".join(line(n) + b"\n" for n in range(first, first + second))
            + line(first + second, DONE)
            + b"\n"
        )
        register_key(agent, keys)  # re-enrollment: the new key beside the old one
        agent.start()
        assert agent.process is not None
        wait_for(
            lambda: env.count(agent.id, DONE) >= 1 and env.count(agent.id) > first + second,
            f"agent {agent.id} to deliver its last line",
            timeout=240,
            watch=[agent.process, collector],
        )
        agent.stop()
    finally:
        collector.stop()
    new_stream = json.loads((agent.state / "stream.json").read_text())["stream_id"]
    assert new_stream != old_stream
    docs = assert_exactly_once(env, agent, set(range(first + second + 1)))
    assert len(docs) == first + second + 1
    by_stream: dict[str, list[int]] = {}
    for doc in docs:
        by_stream.setdefault(doc["_id"].split(":")[1], []).append(doc["event"]["sequence"])
    assert sorted(by_stream[old_stream]) == list(range(1, first + 1))
    assert sorted(by_stream[new_stream]) == list(range(1, second + 2))
    alerts = f"{env.prefix}-alerts"
    env.client.indices.refresh(index=alerts, ignore_unavailable=True)
    hits = env.client.search(
        index=alerts,
        body={"query": {"term": {"agent.id": agent.id}}, "size": 100},
        ignore_unavailable=True,
    )["hits"]["hits"]
    kinds = sorted(hit["_source"]["alert"]["kind"] for hit in hits)
    assert kinds == ["agent_restarted_without_state"], kinds
    (restart,) = hits
    assert (
        f"previous stream {old_stream} ended at sequence {first}"
        in (restart["_source"]["alert"]["reason"])
    )
