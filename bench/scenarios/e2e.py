"""End-to-end: lines appended to a file -> agent -> collector -> searchable in OpenSearch.

Per run: a fresh index prefix, a real collector and agent (processes), set up as
production runs them (bench.pipeline.Integrity): the agent's signing key created and
registered with the collector, ``require_seal`` on (every batch's seal and chain checked
before its ack, the chain head moved, the seal stored), signed checkpoints written. A
warm-up line is shipped and made searchable first (connections up, index created); then
the corpus is appended to one log file and the clock runs until ``_count`` (after a
refresh, polled every second, every tenth of one from 90 % of the lines on) shows
every line. CPU time and peak RSS of the agent and
the collector process are read from /proc. After the clock stops, untimed, the run must
show that the integrity work was done: every stored event covered by a verified seal,
no integrity alert, and a signed checkpoint naming the agent's last sealed sequence.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from opensearchpy.helpers import scan

from bench.corpus import WARMUP_OBJECT_ID, warmup_line
from bench.pipeline import AGENT_ID, Bench, Integrity, agent, collector, run_scope
from bench.processes import BenchError
from bench.procstat import CpuMark, peak_rss_kib
from bench.scenarios.base import Exported, NodeCpu, Run, per_million, rounded
from bench.scenarios.shipping import wait_warmed, write_and_wait
from bench.search import count, index_definition
from collector.checkpoints import CheckpointView, read_checkpoints


def run_once(
    bench: Bench, lines: Sequence[bytes], chunk: int, *, export: bool = False
) -> tuple[Run, Exported | None]:
    """One measured run; with `export`, also the documents it produced."""
    exported = None
    with run_scope(bench, "e2e") as (prefix, directory):
        logs = directory / "logs"
        logs.mkdir()
        (logs / "warmup.jsonl").write_bytes(warmup_line(prefix))
        index = f"{prefix}-events-*"
        integrity = Integrity.under(directory)
        with (
            collector(bench, directory, prefix, extra=integrity.collector_yaml()) as (
                collector_proc,
                port,
            ),
            agent(bench, directory, str(logs / "*.jsonl"), port, keys=integrity.keys) as agent_proc,
        ):
            watch = (collector_proc, agent_proc)
            wait_warmed(bench.os, index, watch)
            agent_cpu = CpuMark.now(agent_proc.pid)
            collector_cpu = CpuMark.now(collector_proc.pid)
            node_cpu = NodeCpu(bench.node_pid)
            shipped = write_and_wait(bench.os, logs / "crm-audit.jsonl", lines, chunk, index, watch)
            events = len(lines)
            run: Run = {
                **shipped.throughput(),
                "agent_cpu_s_per_m": per_million(agent_cpu.since(), events),
                "collector_cpu_s_per_m": per_million(collector_cpu.since(), events),
                "agent_peak_rss_mib": peak_rss_kib(agent_proc.pid) / 1024,
                "collector_peak_rss_mib": peak_rss_kib(collector_proc.pid) / 1024,
                **node_cpu.per_million(events),
            }
            run["pipeline_cpu_s_per_m"] = run["agent_cpu_s_per_m"] + run["collector_cpu_s_per_m"]
            run["sealed_events"] = check_integrity(bench, prefix, integrity)
            # events, the batch documents with their bytes, seals: together, then each
            parts = {"events": index, "batches": f"{prefix}-batches-*", "seals": f"{prefix}-seals"}
            run.update(shipped.stored(bench.os, ",".join(parts.values())))
            for part, pattern in parts.items():
                stored = shipped.stored(bench.os, pattern)["stored_bytes_per_event"]
                run[f"stored_{part}_bytes_per_event"] = stored
        if export:
            exported = _export(bench, prefix, f"{index},{prefix}-batches-*")
    return rounded(run), exported


def check_integrity(bench: Bench, prefix: str, integrity: Integrity) -> int:
    """Raise unless the run did the integrity work; the number of events sealed."""
    stored = count(bench.os, f"{prefix}-events-*")
    count(bench.os, f"{prefix}-seals")  # refresh
    seals = bench.os.search(
        index=f"{prefix}-seals",
        body={
            "size": 0,
            "query": {"term": {"seal.verified": True}},
            "aggs": {
                "events": {"sum": {"field": "seal.event_count"}},
                "last": {"max": {"field": "seal.last_sequence"}},
            },
        },
    )["aggregations"]
    sealed, last = int(seals["events"]["value"] or 0), int(seals["last"]["value"] or 0)
    alerts = count(bench.os, f"{prefix}-alerts")
    if sealed != stored or alerts:
        raise BenchError(
            f"integrity not done as in production: {sealed} events under verified seals, "
            f"{stored} stored, {alerts} integrity alerts"
        )
    deadline = time.monotonic() + 4 * integrity.checkpoint_interval_s + 10
    while True:
        view = read_checkpoints(integrity.checkpoints)
        attested = _attested(view)
        if view.problems:
            raise BenchError(f"checkpoints: {view.problems[:3]}")
        if attested == last:
            return sealed
        if time.monotonic() > deadline:
            raise BenchError(f"no signed checkpoint of sequence {last} (latest: {attested})")
        time.sleep(0.5)


def _attested(view: CheckpointView) -> int | None:
    """The bench agent's last checkpointed sequence: its one stream (format 2; a run
    starts from a fresh state directory, so one stream) or its format 1 chain."""
    streams = [seq for (agent, _), (seq, _, _) in view.streams.items() if agent == AGENT_ID]
    if streams:
        return max((seq for seq in streams if seq is not None), default=None)
    return view.heads.get(AGENT_ID, (None, "", ""))[0]


def _export(bench: Bench, prefix: str, index: str) -> Exported:
    query = {"query": {"bool": {"must_not": {"term": {"crm.object.id": WARMUP_OBJECT_ID}}}}}
    docs = [
        (str(hit["_index"]), str(hit["_id"]), hit["_source"])
        for hit in scan(bench.os, index=index, query=query, size=2000, scroll="2m")
    ]
    # In the order the collector wrote them: each batch document after its events.
    docs.sort(key=_written_order)
    indices = {name: index_definition(bench.os, name) for name in {doc[0] for doc in docs}}
    return Exported(prefix, indices, docs)


def _written_order(doc: tuple[str, str, dict[str, Any]]) -> tuple[int, int]:
    source = doc[2]
    if "batch" in source:
        return int(source["batch"]["last"]), 1
    return int(source.get("event", {}).get("sequence", 0)), 0
