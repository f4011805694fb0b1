"""Latency: write-to-searchable at a steady rate through agent -> collector -> OpenSearch.

A writer thread appends lines to one log file at `rate` lines/s (background lines from
the sample corpus); every `probe_every`-th line is a probe whose ``crm.object.id`` is a
unique marker, and its write time (wall clock, right after the write returned) is
kept. The main thread searches for the outstanding markers every 100 ms without
forcing a refresh, so what is measured is what a user searching sees, including
OpenSearch's 1 s refresh interval and the agent's batch wait (max_wait_s 1.0). The
sampling interval bounds the resolution (~0.1 s).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from opensearchpy.exceptions import TransportError

from bench.corpus import PacedWriter, warmup_line
from bench.pipeline import Bench, agent, collector, run_scope
from bench.processes import BenchError
from bench.scenarios.base import Run, Say, rounded
from bench.scenarios.shipping import wait_warmed
from bench.stats import percentile

POLL_S = 0.1
SETTLE_S = 120.0  # how long after the last write probes may still appear


def _search_markers(bench: Bench, index: str, markers: Sequence[str]) -> list[str]:
    found: list[str] = []
    for start in range(0, len(markers), 1000):
        part = list(markers[start : start + 1000])
        result = bench.os.search(
            index=index,
            body={
                "query": {"terms": {"crm.object.id": part}},
                "_source": ["crm.object.id"],
                "size": len(part),
            },
            ignore_unavailable=True,
        )
        found.extend(str(hit["_source"]["crm"]["object"]["id"]) for hit in result["hits"]["hits"])
    return found


def run_once(
    bench: Bench,
    background: Sequence[bytes],
    *,
    rate: float,
    duration_s: float,
    probe_every: int,
) -> Run:
    with run_scope(bench, "latency") as (prefix, directory):
        logs = directory / "logs"
        logs.mkdir()
        (logs / "warmup.jsonl").write_bytes(warmup_line(prefix))
        index = f"{prefix}-events-*"
        with (
            collector(bench, directory, prefix) as (collector_proc, port),
            agent(bench, directory, str(logs / "*.jsonl"), port) as agent_proc,
        ):
            watch = (collector_proc, agent_proc)
            wait_warmed(bench.os, index, watch)
            writer = PacedWriter(
                path=logs / "crm-audit.jsonl",
                background=background,
                rate_per_s=rate,
                duration_s=duration_s,
                probe_every=probe_every,
                run_tag=prefix,
            )
            started = time.monotonic()
            writer.start()
            seen: dict[str, float] = {}
            deadline = started + duration_s + SETTLE_S
            while True:
                written = dict(writer.probes)  # copied while the writer thread adds to it
                outstanding = [marker for marker in written if marker not in seen]
                if outstanding:
                    try:
                        hits = _search_markers(bench, index, outstanding)
                    except TransportError:
                        hits = []  # e.g. 503 while a shard starts: searched again next poll
                    now = time.time()
                    for marker in hits:
                        seen.setdefault(marker, now)
                finished = writer.lines_written >= int(rate * duration_s)
                if finished and len(seen) == len(written):
                    break
                if writer.error is not None:
                    raise BenchError(f"latency writer failed: {writer.error}")
                for proc in watch:
                    proc.check_alive("latency probes were outstanding")
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{len(written) - len(seen)} of {len(written)} latency probes not "
                        f"searchable {SETTLE_S:.0f} s after the last write"
                    )
                time.sleep(POLL_S)
            write_span = time.monotonic() - started
            writer.join(5)
        latencies = [seen[marker] - at for marker, at in written.items()]
        return rounded(
            {
                "probes": len(latencies),
                "lines": writer.lines_written,
                "rate_per_s": rate,
                "p50_s": percentile(latencies, 50),
                "p90_s": percentile(latencies, 90),
                "p99_s": percentile(latencies, 99),
                "max_s": max(latencies),
                "min_s": min(latencies),
                "span_s": write_span,
            }
        )


def measure(
    bench: Bench,
    background: Sequence[bytes],
    *,
    rate: float,
    duration_s: float,
    probe_every: int,
    runs: int,
    say: Say,
) -> list[Run]:
    results = []
    for number in range(1, runs + 1):
        run = run_once(bench, background, rate=rate, duration_s=duration_s, probe_every=probe_every)
        say(
            f"latency run {number}/{runs}: p50 {run['p50_s']:.2f} s, p99 {run['p99_s']:.2f} s "
            f"({run['probes']:.0f} probes)"
        )
        results.append(run)
    return results
