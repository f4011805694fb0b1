"""Ceiling: the end-to-end run's own documents bulk-indexed straight into OpenSearch.

The documents are those the collector wrote in an unmeasured end-to-end run (same
``_id``, same ``_source``): the events and the batch documents holding their bytes
(`collector.batchbytes`; rates count event documents), indexed with
``op_type=create`` into fresh indices created with the settings and mappings of the
indices the collector wrote them to. Bulk bodies are serialized before the clock
starts, so what is measured is OpenSearch taking bulks from opensearch-py, not Python
building them. A small grid of bulk sizes x
concurrent requests is tried on a part of the documents; the best is then measured on
all of them, once per round (bench.rounds). The clock stops after a final refresh
(searchable).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opensearchpy import TransportError

from bench.pipeline import Bench, run_scope
from bench.processes import BenchError
from bench.scenarios.base import Exported, NodeCpu, Run, Say, rounded
from bench.search import client, count

Doc = tuple[str, str, dict[str, Any]]


def _bodies(docs: Sequence[Doc], rename: dict[str, str], bulk_size: int) -> list[bytes]:
    bodies = []
    for start in range(0, len(docs), bulk_size):
        parts = []
        for index, doc_id, source in docs[start : start + bulk_size]:
            parts.append(json.dumps({"create": {"_index": rename[index], "_id": doc_id}}))
            parts.append(json.dumps(source, ensure_ascii=False, separators=(",", ":")))
        bodies.append(("\n".join(parts) + "\n").encode("utf-8"))
    return bodies


def _first_error(response: dict[str, Any]) -> str:
    for item in response.get("items", []):
        result: dict[str, Any] = next(iter(item.values()), {})
        if result.get("status", 0) >= 300:
            return f"{result.get('status')}: {json.dumps(result.get('error'))[:300]}"
    return "unknown"


def run_once(
    bench: Bench, exported: Exported, docs: Sequence[Doc], bulk_size: int, concurrency: int
) -> Run:
    with run_scope(bench, "ceiling") as (prefix, _directory):
        rename = {index: prefix + index[len(exported.prefix) :] for index in {d[0] for d in docs}}
        for original, index in rename.items():
            bench.os.indices.create(index=index, body=exported.indices[original])
        bodies = _bodies(docs, rename, bulk_size)
        bulk_client = client(bench.url, timeout=300, pool=concurrency + 1)
        try:
            started = time.monotonic()
            node_cpu = NodeCpu(bench.node_pid)
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                for response in pool.map(lambda body: bulk_client.bulk(body=body), bodies):
                    if response.get("errors"):
                        raise BenchError(f"bulk item refused: {_first_error(response)}")
            bulk_client.indices.refresh(index=",".join(rename.values()))
            elapsed = time.monotonic() - started
            events = sum(1 for index, _id, _source in docs if "-events-" in index)
            node = node_cpu.per_million(events)
        finally:
            bulk_client.close()
        found = count(bench.os, f"{prefix}-events-*")
        if found != events:
            raise BenchError(f"ceiling: {found} event documents searchable, {events} sent")
        # Rates per event document: the batch documents carrying the events' bytes are
        # indexed with them (the collector writes them), not counted as documents.
        return rounded(
            {
                "docs": events,
                "batch_docs": len(docs) - events,
                "bulk_size": bulk_size,
                "concurrency": concurrency,
                "elapsed_s": elapsed,
                "docs_per_s": events / elapsed,
                **node,
            }
        )


def probe(
    bench: Bench,
    exported: Exported,
    *,
    probe_docs: int,
    bulk_sizes: Sequence[int],
    concurrency: Sequence[int],
    say: Say,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(the grid of probes, the best bulk size and concurrency) on part of the documents."""
    grid: list[dict[str, Any]] = []
    part = exported.docs[:probe_docs]
    for size in bulk_sizes:
        for threads in concurrency:
            try:
                result = run_once(bench, exported, part, size, threads)
            except TransportError as exc:
                if exc.status_code != 429:
                    raise
                # More bytes in flight than the node's indexing pressure limit allows
                # (10% of heap): not a set-up a client could sustain, so not a ceiling.
                say(f"ceiling probe bulk {size} x {threads}: refused by OpenSearch (429)")
                grid.append({"bulk_size": size, "concurrency": threads, "refused": "429"})
                continue
            say(f"ceiling probe bulk {size} x {threads}: {result['docs_per_s']:,.0f} docs/s")
            grid.append(result)
    usable = [r for r in grid if "docs_per_s" in r]
    if not usable:
        raise BenchError("ceiling: OpenSearch refused every bulk size x concurrency probed")
    best = max(usable, key=lambda r: r["docs_per_s"])
    return grid, {"bulk_size": int(best["bulk_size"]), "concurrency": int(best["concurrency"])}
