"""Peer: rsyslog (imfile -> mmjsonparse -> omelasticsearch) shipping the same corpus.

Same files, written the same way, into the same OpenSearch, measured the same way as
the end-to-end scenario: warm-up line searchable first, then the corpus appended to one
file, the clock stops when ``_count`` shows every line. CPU seconds and peak RSS are
those of the rsyslogd process. The config is bench/templates/rsyslog.conf; the index
gets bench/templates/rsyslog-index-template.json (strings as keywords, the raw line
stored but not indexed, like our mapping).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from bench.corpus import append_all, corpus_bytes, warmup_line
from bench.pipeline import Bench, rsyslog, run_scope
from bench.procstat import CpuMark, peak_rss_kib
from bench.scenarios.base import Run, Say, per_million, rounded
from bench.scenarios.e2e import timeout_for
from bench.search import CountSamples, wait_for_count
from bench.stats import rate_between


def run_once(bench: Bench, lines: Sequence[bytes], chunk: int) -> Run:
    with run_scope(bench, "peer") as (prefix, directory):
        logs = directory / "logs"
        logs.mkdir()
        (logs / "warmup.jsonl").write_bytes(warmup_line(prefix))
        index = f"{prefix}-rsyslog"
        with rsyslog(bench, directory, index, str(logs / "*.jsonl")) as proc:
            wait_for_count(
                bench.os,
                index,
                1,
                started=time.monotonic(),
                timeout=120,
                watch=(proc,),
                interval=0.2,
            )
            cpu = CpuMark.now(proc.pid)
            started = time.monotonic()
            append_all([logs / "crm-audit.jsonl"], [lines], chunk)
            write_s = time.monotonic() - started
            progress = CountSamples()
            elapsed = wait_for_count(
                bench.os,
                index,
                1 + len(lines),
                started=started,
                timeout=timeout_for(len(lines)),
                watch=(proc,),
                progress=progress,
            )
            events = len(lines)
            return rounded(
                {
                    "events": events,
                    "elapsed_s": elapsed,
                    "events_per_s": events / elapsed,
                    "steady_events_per_s": rate_between(progress.samples, 0.1, 0.9) or float("nan"),
                    "write_s": write_s,
                    "mib_per_s": corpus_bytes(lines) / elapsed / 2**20,
                    "cpu_s_per_m": per_million(cpu.since(), events),
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
