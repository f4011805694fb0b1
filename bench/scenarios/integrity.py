"""Integrity: what tamper evidence costs on the agent, on the collector and in `verify`.

Events: the benchmark's realistic corpus, parsed by the jsonlines parser and stamped as
the agent's reading side does (observer, observed time, log origin, stream), numbered
1..N, and serialized once as the agent spools them (`proto.integrity.event_bytes_v2`;
that serialization is the parsers scenario's "normalize" row, not timed here).

Per run, in-process (one core, no I/O), stream format 2 exactly as agent and collector
run it:

- event hash: `proto.integrity.event_hash` over each event's spooled bytes (what
  `agent.outbox` computes per event), µs per event;
- sealing: `agent.sealing.seal_events` over batches of `batch_size` hashes (the head
  chained over them with `head_link`, the v2 seal built and Ed25519-signed), µs per
  event;
- batch verification: `proto.integrity.verify_batch` on the v2 batches (event bytes +
  seal: hashes recomputed, heads and signature checked; what the collector does
  before acking), µs per event.

Event hash + sealing is the agent's whole integrity cost per event.

Once per scenario the sealed v2 batches of one stream are shipped by a test client
(gRPC, mTLS with the bench agent's certificate; what the agent sends) to a real
collector process with ``integrity: {keys_dir, checkpoint_dir}`` and the agent's key
registered, until every event is searchable and a signed checkpoint names the stream's
last sequence. Then each run times `crm-audit verify` (a real process, JSON output,
wall time including its start-up) over the N events and requires it to find exactly
one VALID range for the stream.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.parse_command import parse_bytes
from agent.parsers import get_framer, get_parser
from agent.sealing import AgentKey, seal_events
from bench.pipeline import AGENT_ID, Bench, collector, run_scope
from bench.processes import BenchError, wait_until
from bench.scenarios.base import Run, Say, rounded
from bench.search import wait_for_count
from collector.checkpoints import read_checkpoints
from collector.keys import register_key
from proto import integrity
from proto.v1 import audit_pb2 as pb
from proto.v1 import audit_pb2_grpc as pb_grpc

EVENT_TIME_NS = 1_767_600_000_000_000_000  # 2026-01-05: one monthly index
MIN_RATE = 100.0  # events/s below which ingest or verify is given up as stuck
STREAM_ID = "0123456789abcdef"  # the bench agent's one stream


def build_events(
    lines: Sequence[bytes], agent_id: str = AGENT_ID, stream_id: str = STREAM_ID
) -> list[pb.AuditEvent]:
    """The corpus as the agent numbers it: parsed, stamped, numbered from 1."""
    parse, framer = get_parser("jsonlines", {}), get_framer("jsonlines")
    observer = pb.Observer(agent_id=agent_id, hostname="bench-host", agent_version="bench")
    events = []
    for number, item in enumerate(parse_bytes(b"".join(lines), parse, framer), start=1):
        event = item.event
        event.sequence = number
        event.stream_id = stream_id
        event.observed_unix_nano = EVENT_TIME_NS + number
        event.observer.CopyFrom(observer)
        event.log.file_path = "/var/log/crm/audit.jsonl"
        event.log.source_name = "crm_app"
        event.log.format = "jsonlines"
        events.append(event)
    return events


def new_key() -> AgentKey:
    private = Ed25519PrivateKey.generate()
    return AgentKey(private, integrity.key_id(private.public_key()))


def hash_all(data: Sequence[bytes]) -> tuple[float, list[bytes]]:
    """`event_hash` of every event's bytes; (seconds taken, the hashes)."""
    started = time.perf_counter()
    hashes = [integrity.event_hash(d) for d in data]
    return time.perf_counter() - started, hashes


def seal_all(
    events: Sequence[pb.AuditEvent],
    data: Sequence[bytes],
    hashes: Sequence[bytes],
    key: AgentKey,
    size: int,
    agent_id: str = AGENT_ID,
    stream_id: str = STREAM_ID,
) -> tuple[float, list[pb.Batch]]:
    """Seal batches of `size` as the agent's outbox does; (seconds in `seal_events`,
    the v2 batches as shipped: event bytes + seal)."""
    head = integrity.genesis_v2(agent_id, stream_id)
    ranges = [  # the event-time range is the outbox's (kept per record), not timed
        integrity.event_time_range(events[start : start + size])
        for start in range(0, len(events), size)
    ]
    seals = []
    started = time.perf_counter()
    for number, start in enumerate(range(0, len(events), size)):
        sealed = seal_events(
            key,
            agent_id=agent_id,
            stream_id=stream_id,
            first_sequence=start + 1,
            prev_head=head,
            event_hashes=hashes[start : start + size],
            time_range=ranges[number],
            now_unix_nano=EVENT_TIME_NS + number,
        )
        head = sealed.chain_head
        seals.append(sealed)
    elapsed = time.perf_counter() - started
    batches = [
        pb.Batch(
            batch_id=number + 1,
            agent_id=agent_id,
            format_version=integrity.FORMAT_V2,
            event_bytes=data[start : start + size],
            seal=seals[number],
        )
        for number, start in enumerate(range(0, len(events), size))
    ]
    return elapsed, batches


def verify_all(batches: Sequence[pb.Batch], key: AgentKey, agent_id: str = AGENT_ID) -> float:
    keys = {key.key_id: key.private.public_key()}
    started = time.perf_counter()
    verdicts = [integrity.verify_batch(batch, agent_id, keys) for batch in batches]
    elapsed = time.perf_counter() - started
    bad = [f for verdict in verdicts for f in verdict.findings]
    if bad or not all(v.authentic for v in verdicts):
        raise BenchError(f"verify_batch refused the benchmark's own batches: {bad[:3]}")
    return elapsed


def costs(
    events: Sequence[pb.AuditEvent], data: Sequence[bytes], key: AgentKey, batch_size: int
) -> tuple[Run, list[pb.Batch]]:
    """One in-process run: µs per event of event hashing, sealing and batch
    verification; and the sealed batches."""
    count = len(events)
    hash_s, hashes = hash_all(data)
    seal_s, batches = seal_all(events, data, hashes, key, batch_size)
    verify_s = verify_all(batches, key)
    run = {
        "events": count,
        "batch_size": batch_size,
        "event_hash_us_per_event": hash_s / count * 1e6,
        "seal_us_per_event": seal_s / count * 1e6,
        "verify_batch_us_per_event": verify_s / count * 1e6,
    }
    return run, batches


def _ship(bench: Bench, port: int, batches: Sequence[pb.Batch]) -> None:
    agents = bench.pki / "agents"
    credentials = grpc.ssl_channel_credentials(
        root_certificates=bench.ca.read_bytes(),
        private_key=(agents / f"{AGENT_ID}.key").read_bytes(),
        certificate_chain=(agents / f"{AGENT_ID}.crt").read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        stub = pb_grpc.CollectorStub(channel)
        acks = list(stub.Ship(iter(batches), timeout=120 + len(batches) * 30))
    refused = [ack for ack in acks if ack.status != pb.Ack.STATUS_OK]
    if refused or len(acks) != len(batches):
        raise BenchError(f"collector acked {len(acks)} of {len(batches)} batches: {refused[:2]}")


def _verify_once(bench: Bench, prefix: str, keys: Path, checkpoints: Path, events: int) -> Run:
    argv = [
        str(bench.bin_dir / "crm-audit"), "verify",
        "--opensearch", bench.url, "--prefix", prefix,
        "--keys", str(keys), "--checkpoints", str(checkpoints),
        "--checkpoint-key", str(checkpoints / "collector-signing-key.pub"),
        "--agent", AGENT_ID, "--format", "json",
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=120 + events / MIN_RATE,
        env=dict(bench.child_env),
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise BenchError(
            f"crm-audit verify exited {done.returncode}:\n{done.stdout[-2000:]}\n"
            f"{done.stderr[-2000:]}"
        )
    report = json.loads(done.stdout)
    label = f"{AGENT_ID}:{STREAM_ID}"
    entry = report["agents"].get(label, {})
    found = [(r["kind"], r["first"], r["last"]) for r in entry.get("ranges", [])]
    if found != [("VALID", 1, events)]:
        raise BenchError(
            f"crm-audit verify found {found[:5]} for {label}, expected VALID 1-{events}"
        )
    return {"verify_s": elapsed, "verify_events_per_s": events / elapsed}


def measure(
    bench: Bench, lines: Sequence[bytes], batch_size: int, runs: int, say: Say
) -> tuple[list[Run], dict[str, float]]:
    """The scenario's runs, and how the one ingest went (informative)."""
    key = new_key()
    events = build_events(lines)
    data = [integrity.event_bytes_v2(e) for e in events]  # as spooled (not timed)
    count = len(events)
    in_process = []
    costs(events[: min(count, 2 * batch_size)], data, key, batch_size)  # warm-up
    batches: list[pb.Batch] = []
    for number in range(1, runs + 1):
        run, batches = costs(events, data, key, batch_size)
        say(
            f"integrity run {number}/{runs}: event_hash {run['event_hash_us_per_event']:.1f} µs, "
            f"seal {run['seal_us_per_event']:.1f} µs, verify_batch "
            f"{run['verify_batch_us_per_event']:.1f} µs per event"
        )
        in_process.append(run)
    # The last run's batches are the ones shipped.
    with run_scope(bench, "integrity") as (prefix, directory):
        keys, checkpoints = directory / "keys", directory / "checkpoints"
        register_key(keys, AGENT_ID, key.public_pem())
        checkpoints.mkdir()
        extra = (
            f"\nintegrity:\n  keys_dir: {keys}\n  checkpoint_dir: {checkpoints}\n"
            "  checkpoint_interval_s: 1\n"
        )
        with collector(bench, directory, prefix, extra=extra) as (proc, port):
            started = time.monotonic()
            _ship(bench, port, batches)
            ingest_s = wait_for_count(
                bench.os,
                f"{prefix}-events-*",
                count,
                started=started,
                timeout=120 + count / MIN_RATE,
                watch=(proc,),
                interval=0.5,
            )

            def checkpointed() -> bool:
                view = read_checkpoints(checkpoints)
                head = view.streams.get((AGENT_ID, STREAM_ID))
                return head is not None and head[0] == count

            wait_until(checkpointed, f"a checkpoint at {count}", timeout=60, watch=(proc,))
            say(f"integrity: {count:,} sealed events ingested in {ingest_s:.1f} s")
            results = []
            for number, run in enumerate(in_process, start=1):
                verified = _verify_once(bench, prefix, keys, checkpoints, count)
                say(
                    f"integrity verify run {number}/{runs}: {verified['verify_events_per_s']:,.0f}"
                    f" events/s ({verified['verify_s']:.1f} s)"
                )
                results.append(rounded({**run, **verified}))
    return results, {"ingest_s": round(ingest_s, 2), "ingest_events": count}
