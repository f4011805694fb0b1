"""Agent spool → batch → seal stages per event, in thread CPU time (development tool,
not a scenario; no collector, no network).

    .venv/bin/python -m bench.agentstages [--events 50000]

Events come from the benchmark corpus through the agent's jsonlines parser. Measured:
- append: `Spool.append` of read passes (agent.pipeline.READ_BUDGET events each:
  numbering, the one serialization, compression, CRC, write and one fsync per append);
- outbox: reading the spool back, batching (the default batch.max_events), event
  hashes, head chain, Ed25519 seal and the batch's wire bytes (`Outgoing.wire`, what gRPC sends);
and the spool's bytes per event on disk.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from agent.batch import Batcher
from agent.checkpoint import FileOffset
from agent.outbox import Outbox
from agent.parsers import get_parser
from agent.pipeline import READ_BUDGET
from agent.sealing import AgentKey
from agent.ship import Outgoing
from agent.spool import Entry, Spool
from bench.corpus import sample_lines
from proto import integrity
from proto.v1 import audit_pb2

AGENT = "bench-agent"
PASS = READ_BUDGET
BATCH_EVENTS = 500  # batch.max_events of config/agent.yaml (and the bench's agent)


def _events(count: int) -> list[audit_pb2.AuditEvent]:
    parse = get_parser("jsonlines", {})
    events = []
    for n, line in enumerate(sample_lines(count)):
        event = parse(line.rstrip(b"\n"))
        assert event is not None
        event.observed_unix_nano = 1_767_600_000_000_000_000 + n * 1000
        event.observer.agent_id = AGENT
        event.log.file_path = "/var/log/crm/audit.jsonl"
        event.log.offset = n * 500
        events.append(event)
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    count = args.events
    events = _events(count)
    stream_id = integrity.new_stream_id()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        key = AgentKey.load_or_create(state)
        spool = Spool(state / "spool", max_bytes=1 << 40, segment_bytes=64 << 20)
        spool.open(0, stream_id=stream_id)
        path = "/var/log/crm/audit.jsonl"
        started = time.thread_time()
        for start in range(0, count, PASS):
            spool.append(
                [
                    Entry(e, "2049:77", FileOffset(path, (n + 1) * 500, "1024:ab"))
                    for n, e in enumerate(events[start : start + PASS], start=start)
                ]
            )
        append_s = time.thread_time() - started
        on_disk = spool.size_bytes()
        sent: list[Outgoing] = []
        wire = 0

        def submit(item: Outgoing) -> bool:
            nonlocal wire
            wire += len(item.wire())
            sent.append(item)
            return True

        drain = threading.Event()
        drain.set()
        outbox = Outbox(
            agent_id=AGENT,
            stream_id=stream_id,
            key=key,
            observer=audit_pb2.Observer(agent_id=AGENT),
            spool=spool,
            reader=spool.reader(1),
            batcher=Batcher(BATCH_EVENTS, 8 << 20, 60.0),
            submit=submit,
            wall_ns=time.time_ns,
            monotonic=time.monotonic,
            head=(0, integrity.genesis_v2(AGENT, stream_id)),
        )
        started = time.thread_time()
        outbox.run(drain)
        outbox_s = time.thread_time() - started
        spool.close()
    per = 1e6 / count
    print(
        f"{count} events: append {append_s * per:.1f} µs, read+batch+seal+wire "
        f"{outbox_s * per:.1f} µs, total {(append_s + outbox_s) * per:.1f} µs/event "
        f"(= CPU-s per million); spool {on_disk / count:.0f} B/event; "
        f"{len(sent)} batches, {wire / count:.0f} wire B/event"
    )


if __name__ == "__main__":
    main()
