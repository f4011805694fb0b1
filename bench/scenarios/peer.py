"""Peer: rsyslog (imfile -> mmjsonparse -> omelasticsearch) shipping the same corpus.

Same files, written the same way, into the same OpenSearch, measured the same way as
the end-to-end scenario: warm-up line searchable first, then the corpus appended to one
file, the clock stops when ``_count`` shows every line. CPU seconds and peak RSS are
those of the rsyslogd process. The config is bench/templates/rsyslog.conf; the index
gets bench/templates/rsyslog-index-template.json (strings as keywords, the raw line
stored but not indexed, like our mapping).
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.corpus import warmup_line
from bench.pipeline import Bench, rsyslog, run_scope
from bench.procstat import CpuMark, peak_rss_kib
from bench.scenarios.base import Run, Say, per_million, rounded
from bench.scenarios.shipping import wait_warmed, write_and_wait


def run_once(bench: Bench, lines: Sequence[bytes], chunk: int) -> Run:
    with run_scope(bench, "peer") as (prefix, directory):
        logs = directory / "logs"
        logs.mkdir()
        (logs / "warmup.jsonl").write_bytes(warmup_line(prefix))
        index = f"{prefix}-rsyslog"
        with rsyslog(bench, directory, index, str(logs / "*.jsonl")) as proc:
            wait_warmed(bench.os, index, (proc,))
            cpu = CpuMark.now(proc.pid)
            shipped = write_and_wait(
                bench.os, logs / "crm-audit.jsonl", lines, chunk, index, (proc,)
            )
            return rounded(
                {
                    **shipped.throughput(),
                    "cpu_s_per_m": per_million(cpu.since(), len(lines)),
                    "peak_rss_mib": peak_rss_kib(proc.pid) / 1024,
                }
            )


def measure(bench: Bench, lines: Sequence[bytes], chunk: int, runs: int, say: Say) -> list[Run]:
    results = []
    for number in range(1, runs + 1):
        run = run_once(bench, lines, chunk)
        say(
            f"peer run {number}/{runs}: {run['events_per_s']:,.0f} events/s, "
            f"{run['cpu_s_per_m']:.1f} CPU-s/M"
        )
        results.append(run)
    return results
