"""Collector path of a stream format 2 batch per event, in thread CPU time, beside
format 1 (development tool, not a scenario; no OpenSearch).

    .venv/bin/python -m bench.v2path [--events 20000] [--repeat 3]

Events come from the benchmark corpus through the agent's jsonlines parser. Per format,
each the best of --repeat runs over batches of 500:

- verify: `proto.integrity.verify_batch` (parse or serialize, hashes, seal signature);
- documents: what BatchProcessor builds from the verdict (format 2:
  `collector.formatv2.documents_v2`, then `collector.server.index_requests`);

format 2 once in Python and, when it is installed, once with the compiled kernel
(`collector.native`: verify_batch's scanner and the documents), as the collector runs it.
- bulk body: `BulkIndexer._entries` joined (NDJSON);
- wire: `Batch.FromString` of the received message (what gRPC hands the collector).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.hotpath import _events
from collector import native
from collector.documents import index_name, to_document
from collector.formatv2 import batch_writes, documents_v2
from collector.gate import event_integrity_fields
from collector.index import BulkIndexer, IndexRequest, Response
from collector.retention import RetentionRouter
from collector.server import index_requests
from proto import integrity
from proto.v1 import audit_pb2

BATCH = 500
AGENT = "bench-agent"
RECEIVED = 1_767_600_100_000_000_000
ROUTER = RetentionRouter([], "standard")


def _best(repeat: int, run: Callable[[], None]) -> float:
    """Best thread CPU time of `repeat` runs. The cyclic GC is off while one runs: the
    documents this tool keeps alive for the later stages would otherwise make every
    full collection scan them, charging the later format for the earlier one's garbage."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            started = time.thread_time()
            run()
            best = min(best, time.thread_time() - started)
        finally:
            gc.enable()
    return best


def v1_batches(events: list[audit_pb2.AuditEvent], key: Ed25519PrivateKey) -> list[audit_pb2.Batch]:
    out = []
    head = integrity.genesis(AGENT)
    for start in range(0, len(events), BATCH):
        chunk = [audit_pb2.AuditEvent() for _ in events[start : start + BATCH]]
        prev = head
        for copy, event in zip(chunk, events[start : start + BATCH], strict=True):
            copy.CopyFrom(event)
            head = integrity.chain_link(head, integrity.canonical_event_bytes(copy))
            copy.chain_hash = head
        seal = audit_pb2.Seal(
            agent_id=AGENT,
            first_sequence=chunk[0].sequence,
            last_sequence=chunk[-1].sequence,
            prev_chain_head=prev,
            chain_head=head,
            event_count=len(chunk),
            time_unix_nano=RECEIVED,
        )
        integrity.sign_seal(seal, key)
        out.append(audit_pb2.Batch(batch_id=start, agent_id=AGENT, events=chunk, seal=seal))
    return out


def v2_batches(events: list[audit_pb2.AuditEvent], key: Ed25519PrivateKey) -> list[audit_pb2.Batch]:
    stream = "00112233aabbccdd"
    out = []
    head = integrity.genesis_v2(AGENT, stream)
    for start in range(0, len(events), BATCH):
        chunk = [audit_pb2.AuditEvent() for _ in events[start : start + BATCH]]
        for copy, event in zip(chunk, events[start : start + BATCH], strict=True):
            copy.CopyFrom(event)
            copy.stream_id = stream
        datas = [integrity.event_bytes_v2(e) for e in chunk]
        hashes = [integrity.event_hash(d) for d in datas]
        heads = integrity.heads_over(head, hashes)
        low, high = integrity.event_time_range(chunk)
        seal = audit_pb2.Seal(
            agent_id=AGENT,
            first_sequence=chunk[0].sequence,
            last_sequence=chunk[-1].sequence,
            prev_chain_head=head,
            chain_head=heads[-1],
            event_count=len(chunk),
            time_unix_nano=RECEIVED,
            format_version=2,
            stream_id=stream,
            event_hashes=hashes,
            min_event_time_unix_nano=low,
            max_event_time_unix_nano=high,
        )
        integrity.sign_seal(seal, key)
        head = heads[-1]
        out.append(
            audit_pb2.Batch(
                batch_id=start, agent_id=AGENT, format_version=2, event_bytes=datas, seal=seal
            )
        )
    return out


def requests_v1(batch: audit_pb2.Batch, verdict: integrity.BatchVerdict) -> list[IndexRequest]:
    out = []
    for position, event in enumerate(batch.events):
        doc = to_document(event, agent_id=AGENT, received_unix_nano=RECEIVED)
        doc.source.setdefault("integrity", {}).update(
            event_integrity_fields(verdict.canonical[position], verdict.hashes[position])
        )
        target = index_name("crm-audit", "standard", "monthly", doc.timestamp_unix_nano)
        out.append(IndexRequest(target, doc.doc_id, doc.source, AGENT, doc.sequence))
    return out


def requests_v2(
    batch: audit_pb2.Batch,
    verdict: integrity.BatchVerdict,
    kernel: native.Kernel | None = None,
) -> list[IndexRequest]:
    """What `BatchProcessor` builds: documents, then one create each into the index of
    its retention class and month (`index_requests`, the default router), and the batch
    documents storing the events' bytes (`batch_writes`)."""
    docs = documents_v2(
        batch,
        verdict,
        agent_id=AGENT,
        received_unix_nano=RECEIVED,
        deadletter_index="dlq",
        kernel=kernel,
    )
    requests = index_requests(docs.events, AGENT, "crm-audit", "monthly", ROUTER)
    companions = batch_writes(
        requests, docs.signed, prefix="crm-audit", agent_id=AGENT, received_unix_nano=RECEIVED
    )
    return [*requests, *companions]


def requests_v2_kernel(
    batch: audit_pb2.Batch, verdict: integrity.BatchVerdict
) -> list[IndexRequest]:
    return requests_v2(batch, verdict, native.KERNEL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    key = Ed25519PrivateKey.generate()
    keys = {integrity.key_id(key.public_key()): key.public_key()}
    events = _events(args.events)
    indexer = BulkIndexer(lambda *a, **k: Response(200, {}), deadletter_index="dlq")
    n = len(events)
    print(f"{n} events, batches of {BATCH} (thread CPU, best of {args.repeat}), us/event")
    print(f"{'':10} {'wire':>7} {'verify':>7} {'docs':>7} {'ndjson':>7} {'total':>7}")
    v2 = v2_batches(events, key)
    cases: list[tuple[str, list[audit_pb2.Batch], Callable[..., list[IndexRequest]], Any]] = [
        ("format 1", v1_batches(events, key), requests_v1, None),
        ("format 2", v2, requests_v2, None),
    ]
    if native.KERNEL is not None:
        cases.append(("2 + kernel", v2, requests_v2_kernel, native.SCANNER))
    else:
        print(f"(no kernel row: {native.DESCRIPTION})")
    for name, batches, build, scanner in cases:
        wires = [b.SerializeToString() for b in batches]
        received = [audit_pb2.Batch.FromString(w) for w in wires]
        verdicts = [integrity.verify_batch(b, AGENT, keys, scanner=scanner) for b in received]
        assert all(v.authentic for v in verdicts), name
        requests = [build(b, v) for b, v in zip(received, verdicts, strict=True)]

        def wire(wires: list[bytes] = wires) -> None:
            for data in wires:
                audit_pb2.Batch.FromString(data)

        def verify(received: list[audit_pb2.Batch] = received, scanner: Any = scanner) -> None:
            for batch in received:
                integrity.verify_batch(batch, AGENT, keys, scanner=scanner)

        def docs(
            received: list[audit_pb2.Batch] = received,
            verdicts: list[integrity.BatchVerdict] = verdicts,
            build: Callable[..., list[IndexRequest]] = build,
        ) -> None:
            for batch, verdict in zip(received, verdicts, strict=True):
                build(batch, verdict)

        def ndjson(requests: list[list[IndexRequest]] = requests) -> None:
            for batch_requests in requests:
                b"".join(indexer._entries(batch_requests))

        times = [_best(args.repeat, run) / n * 1e6 for run in (wire, verify, docs, ndjson)]
        cells = " ".join(f"{t:7.1f}" for t in [*times, sum(times)])
        print(f"{name:10} {cells}")


if __name__ == "__main__":
    main()
