"""Collector hot path per event, in thread CPU time (development tool, not a scenario).

    .venv/bin/python -m bench.hotpath [--events 20000] [--repeat 3]

Events come from the benchmark corpus through the agent's jsonlines parser, so they
look like what the e2e scenario ships. Measured, each the best of --repeat runs (thread
CPU time, so other processes on the machine barely move it):

- document: `to_document` plus the integrity fields and index name (BatchProcessor);
- bulk body: `BulkIndexer._entries` joined (NDJSON for 500-event batches);
- response: parsing a bulk response of 500 created items, full and as `filter_path`
  returns it;
- inline detection with the shipped rules (`config/rules.yaml`) over each batch as
  `Detection.on_indexed` gets it: each document parsed back from the JSON the compiled
  kernel builds, made an `Event` (its time read back), and the per-event rules
  evaluated (no alert history: the stored alerts are OpenSearch's part).

The garbage collector is set as the serving collector sets it (`collector.gctune`): with
Python's default first-generation threshold a batch's documents held in memory cost
about 40 % more to parse back than in `crm-audit-collector run`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from agent.parsers import get_parser
from bench.corpus import sample_lines
from collector.detect import inline
from collector.detect.alerts import Event
from collector.detect.rules import load_rules
from collector.documents import Document, index_name, to_document
from collector.gate import event_integrity_fields
from collector.gctune import tune_for_serving
from collector.index import BULK_FILTER_PATH, BulkIndexer, IndexRequest, Response
from proto import integrity
from proto.v1 import audit_pb2

BATCH = 500
RULES = Path(__file__).resolve().parents[1] / "config" / "rules.yaml"


def _events(count: int) -> list[audit_pb2.AuditEvent]:
    parse = get_parser("jsonlines", {})
    events = []
    for sequence, line in enumerate(sample_lines(count), start=1):
        event = parse(line.rstrip(b"\n"))
        assert event is not None
        event.sequence = sequence
        event.observed_unix_nano = 1_767_600_000_000_000_000 + sequence * 1000
        event.observer.agent_id = "bench-agent"
        event.log.file_path = "/var/log/crm/audit.jsonl"
        event.log.offset = sequence * 500
        events.append(event)
    return events


def _best(repeat: int, run: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.thread_time()
        run()
        best = min(best, time.thread_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tune_for_serving()
    events = _events(args.events)
    canonical = [integrity.canonical_event_bytes(event) for event in events]
    hashes = [bytes(32)] * len(events)
    received = 1_767_600_100_000_000_000

    def batch_requests(batch: list[audit_pb2.AuditEvent], offset: int) -> list[IndexRequest]:
        # As BatchProcessor does it; one batch's documents are alive at a time.
        requests = []
        for position, event in enumerate(batch, start=offset):
            doc = to_document(event, agent_id="bench-agent", received_unix_nano=received)
            doc.source.setdefault("integrity", {}).update(
                event_integrity_fields(canonical[position], hashes[position])
            )
            target = index_name("crm-audit", "standard", "monthly", doc.timestamp_unix_nano)
            requests.append(
                IndexRequest(target, doc.doc_id, doc.source, "bench-agent", doc.sequence)
            )
        return requests

    def documents() -> None:
        for start in range(0, len(events), BATCH):
            batch_requests(events[start : start + BATCH], start)

    requests = [
        batch_requests(events[start : start + BATCH], start)
        for start in range(0, len(events), BATCH)
    ]

    indexer = BulkIndexer(lambda *a, **k: Response(200, {}), deadletter_index="dlq")

    def bodies() -> None:
        for batch in requests:
            b"".join(indexer._entries(batch))

    full = json.dumps(
        {
            "took": 30,
            "errors": False,
            "items": [
                {
                    "create": {
                        "_index": "crm-audit-events-standard-2026.01",
                        "_id": f"bench-agent:{i}",
                        "_version": 1,
                        "result": "created",
                        "_shards": {"total": 1, "successful": 1, "failed": 0},
                        "_seq_no": i,
                        "_primary_term": 1,
                        "status": 201,
                    }
                }
                for i in range(BATCH)
            ],
        }
    ).encode()
    filtered = json.dumps(
        {"errors": False, "items": [{"create": {"status": 201}}] * BATCH}
    ).encode()
    batches = max(1, len(events) // BATCH)

    def parse(body: bytes) -> Callable[[], None]:
        def run() -> None:
            for _ in range(batches):
                BulkIndexer._items(Response(200, json.loads(body)), BATCH)

        return run

    rules = load_rules(RULES)
    # As the compiled kernel hands them over: serialized, no dict (IndexRequest.body).
    serialized = [
        [r._replace(source=None, body=orjson.dumps(r.source)) for r in batch] for batch in requests
    ]

    def detection_input(batch: list[IndexRequest]) -> list[tuple[str, Document]]:
        # What BatchProcessor hands Detection.on_indexed.
        return [(r.doc_id, r.document()) for r in batch]

    parsed = [detection_input(batch) for batch in serialized]
    as_events = [[Event.from_source(doc_id, doc) for doc_id, doc in batch] for batch in parsed]

    def parse_back() -> None:
        for batch in serialized:
            detection_input(batch)

    def make_events() -> None:
        for batch in parsed:
            [Event.from_source(doc_id, doc) for doc_id, doc in batch]

    def evaluate() -> None:
        for batch in as_events:
            inline.evaluate(rules, batch, lambda *_: {})

    n = len(events)
    doc_s = _best(args.repeat, documents)
    body_s = _best(args.repeat, bodies)
    full_s = _best(args.repeat, parse(full))
    filtered_s = _best(args.repeat, parse(filtered))
    print(f"{n} events, batches of {BATCH} (thread CPU, best of {args.repeat})")
    print(f"document (to_document + integrity + index) {doc_s / n * 1e6:7.1f} us/event")
    print(f"bulk body (NDJSON)                         {body_s / n * 1e6:7.1f} us/event")
    print(
        f"bulk response, full ({len(full) // 1024} KiB/batch)        "
        f"{full_s / n * 1e6:7.1f} us/event"
    )
    print(
        f"bulk response, filter_path={BULK_FILTER_PATH} ({len(filtered) // 1024} KiB/batch) "
        f"{filtered_s / n * 1e6:7.1f} us/event"
    )
    parse_s = _best(args.repeat, parse_back)
    events_s = _best(args.repeat, make_events)
    rules_s = _best(args.repeat, evaluate)
    print(f"inline detection: document parsed back     {parse_s / n * 1e6:7.1f} us/event")
    print(f"inline detection: Event.from_source        {events_s / n * 1e6:7.1f} us/event")
    print(f"inline detection: rules ({RULES.name})      {rules_s / n * 1e6:7.1f} us/event")


if __name__ == "__main__":
    main()
