"""Agent alone: files -> agent -> a null collector that acks at once without indexing.

Also the scaling scenario's runner (files x line length). The clock starts when the
corpus is appended (after a warm-up line was acked) and stops when the null collector
has acked every line; CPU seconds (utime+stime of the agent process) are taken over
the same span, peak RSS is the agent's VmHWM at the end.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from bench.corpus import append_all, corpus_bytes, warmup_line
from bench.nullcollector import NullCollector
from bench.pipeline import Bench, agent, null_collector, run_scope
from bench.processes import BenchError, Proc
from bench.procstat import CpuMark, peak_rss_kib
from bench.scenarios.base import Run, Say, per_million, rounded
from bench.search import STALL_S
from bench.stats import rate_between

MIN_RATE = 100.0  # events/s below which a run is given up as stuck


def _wait_acked(server: NullCollector, target: int, proc: Proc, timeout: float) -> float:
    """Monotonic time at which `target` distinct events had been acked."""
    deadline = time.monotonic() + timeout
    last_change, last_seen = time.monotonic(), -1
    while True:
        reached = server.wait_for(target, timeout=0.5)
        if reached is not None:
            return reached
        proc.check_alive(f"waiting for {target} acked events ({server.events} so far)")
        now, seen = time.monotonic(), server.events
        if seen != last_seen:
            last_change, last_seen = now, seen
        if now > deadline or now - last_change > STALL_S:
            raise BenchError(
                f"only {server.events} of {target} events acked after {timeout:.0f} s; "
                f"agent log {proc.log_path}:\n{proc.log_tail(1500)}"
            )


def run_once(bench: Bench, per_file: Sequence[Sequence[bytes]], chunk: int, what: str) -> Run:
    """One run with `len(per_file)` log files, file k getting `per_file[k]`."""
    events = sum(len(lines) for lines in per_file)
    with (
        run_scope(bench, what, indices=False) as (_prefix, directory),
        null_collector(bench) as server,
    ):
        logs = directory / "logs"
        logs.mkdir()
        (logs / "warmup.jsonl").write_bytes(warmup_line(what))
        with agent(bench, directory, str(logs / "*.jsonl"), server.port) as proc:
            _wait_acked(server, 1, proc, timeout=120)
            cpu = CpuMark.now(proc.pid)
            started = time.monotonic()
            paths = [logs / f"app-{k:03d}.jsonl" for k in range(len(per_file))]
            append_all(paths, per_file, chunk)
            write_s = time.monotonic() - started
            done = _wait_acked(server, 1 + events, proc, timeout=120 + events / MIN_RATE)
            cpu_s = cpu.since()
            peak = peak_rss_kib(proc.pid)
        elapsed = done - started
        samples = [(t - started, n - 1) for t, n in server.samples if t >= started]
        size = sum(corpus_bytes(lines) for lines in per_file)
        return rounded(
            {
                "events": events,
                "files": len(per_file),
                "avg_line_bytes": size / events if events else 0.0,
                "elapsed_s": elapsed,
                "events_per_s": events / elapsed,
                "steady_events_per_s": rate_between(samples, 0.1, 0.9) or float("nan"),
                "write_s": write_s,
                "mib_per_s": size / elapsed / 2**20,
                "cpu_s_per_m": per_million(cpu_s, events),
                "peak_rss_mib": peak / 1024,
                "batches": server.batches,
            }
        )


def measure(
    bench: Bench,
    per_file: Sequence[Sequence[bytes]],
    chunk: int,
    runs: int,
    say: Say,
    what: str = "agent",
) -> list[Run]:
    results = []
    for number in range(1, runs + 1):
        run = run_once(bench, per_file, chunk, what)
        say(
            f"{what} run {number}/{runs}: {run['events_per_s']:,.0f} events/s, "
            f"{run['cpu_s_per_m']:.1f} CPU-s/M, peak RSS {run['peak_rss_mib']:.0f} MiB"
        )
        results.append(run)
    return results
