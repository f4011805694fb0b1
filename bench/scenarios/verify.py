"""Verify at scale: `crm-audit verify` against a raw read of the same documents.

Data (once per scenario, not timed): the real pipeline as production runs it — a real
agent process tails a file and ships over mTLS gRPC to a real collector process with the
agent's key registered, ``require_seal`` on and signed checkpoints written
(bench.pipeline.Integrity) — so the documents are whatever format the agent and collector
of this checkout write. The corpus (N lines plus the warm-up line) is appended, every
line is waited for in OpenSearch, the integrity work is checked (every event under a
verified seal, a signed checkpoint of the last sequence), then agent and collector stop:
nothing else writes or competes for the CPU while the clock runs.

Per run, alternating (each a fresh process, wall time including its start-up, CPU time
with its worker processes', peak RSS as its VmHWM or its and its workers' summed PSS,
polled):

- raw read: `python -m bench.rawread` reads the agent's events (full ``_source``) and
  seals with a point in time + search_after, verify's page size, through opensearch-py,
  parsing each page's JSON (verify's decoder) and nothing more;
- verify: `crm-audit verify --keys --checkpoints --checkpoint-key --format json`, which
  must exit 0 with ``valid`` true and have checked every stored event.

Reported: events/s and CPU-s per million events of both, verify ÷ raw read, verify's
peak RSS.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.corpus import warmup_line
from bench.pipeline import AGENT_ID, Bench, Integrity, agent, collector, run_scope
from bench.processes import BenchError
from bench.procstat import peak_rss_kib, pss_kib
from bench.scenarios.base import Run, Say, rounded
from bench.scenarios.e2e import check_integrity
from bench.scenarios.shipping import wait_warmed, write_and_wait
from bench.search import count

MIN_RATE = 100.0  # events/s below which a read or a verification is given up as stuck


@dataclass(frozen=True)
class Finished:
    """One child process run to its end."""

    stdout: str
    stderr: str
    returncode: int
    elapsed_s: float
    peak_rss_mib: float
    cpu_s: float  # its CPU and its worker processes' (user + system)


def _children(pid: int) -> list[int]:
    """The child processes of `pid` (verify's and the raw read's worker processes)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as listing:
                found += [int(child) for child in listing.read().split()]
    except OSError:  # exited between two polls
        pass
    return found


def _tree_kib(pid: int, known: int) -> int:
    """The larger of `known`, the process's VmHWM, and the sum of its and its worker
    processes' current proportional set sizes (pages shared since the fork counted
    once)."""
    try:
        peak = peak_rss_kib(pid)
        children = _children(pid)
        if not children:
            return max(known, peak)
        total = pss_kib(pid)
        for child in children:
            with contextlib.suppress(OSError, ValueError):
                total += pss_kib(child)
        return max(known, peak, total)
    except (OSError, ValueError):  # exited between two polls
        return known


def run_child(argv: Sequence[str], env: dict[str, str], timeout: float, scratch: Path) -> Finished:
    """Run `argv` to its end; its wall time, CPU time and peak RSS.

    The peak is polled every 20 ms until the process exits: its VmHWM (monotonic, so
    only growth in its last 20 ms can be missed), or, when it runs worker processes,
    the sum of their and its proportional set sizes if larger (a worker's growth
    between two polls can be missed). Not wait4's ru_maxrss: Linux carries the forking
    parent's high-water mark across exec into it, which here is the bench's. The CPU
    time is wait4's, which includes the worker processes it waited for.
    """
    out, err = scratch / "child.out", scratch / "child.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=env)
        deadline = started + timeout
        peak = 0
        while True:
            peak = _tree_kib(proc.pid, peak)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                raise BenchError(f"{argv[0]} still running after {timeout:.0f} s; killed")
            time.sleep(0.02)
        elapsed = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Finished(
        out.read_text(encoding="utf-8", errors="replace"),
        err.read_text(encoding="utf-8", errors="replace"),
        proc.returncode,
        elapsed,
        peak / 1024,
        usage.ru_utime + usage.ru_stime,
    )


def raw_read(bench: Bench, prefix: str, stored: int, scratch: Path) -> Run:
    argv = [sys.executable, "-m", "bench.rawread", bench.url, prefix, AGENT_ID]
    env = {**bench.child_env, "PYTHONPATH": str(bench.repo)}
    done = run_child(argv, env, 120 + stored / MIN_RATE, scratch)
    if done.returncode != 0:
        raise BenchError(f"raw read exited {done.returncode}: {done.stderr[-2000:]}")
    read = json.loads(done.stdout)
    if read["events"] != stored:
        raise BenchError(f"raw read saw {read['events']} events, {stored} stored")
    return {
        "raw_s": done.elapsed_s,
        "raw_events_per_s": stored / done.elapsed_s,
        "raw_peak_rss_mib": done.peak_rss_mib,
        "raw_cpu_s_per_m": done.cpu_s * 1e6 / stored,
        "seals": read["seals"],
    }


def verify(bench: Bench, prefix: str, integrity: Integrity, stored: int, scratch: Path) -> Run:
    argv = [
        str(bench.bin_dir / "crm-audit"), "verify",
        "--opensearch", bench.url, "--prefix", prefix,
        "--keys", str(integrity.keys), "--checkpoints", str(integrity.checkpoints),
        "--checkpoint-key", str(integrity.checkpoints / "collector-signing-key.pub"),
        "--format", "json",
    ]  # fmt: skip
    done = run_child(argv, dict(bench.child_env), 120 + stored / MIN_RATE, scratch)
    if done.returncode != 0:
        raise BenchError(
            f"crm-audit verify exited {done.returncode}:\n{done.stdout[-2000:]}\n"
            f"{done.stderr[-2000:]}"
        )
    report = json.loads(done.stdout)
    if report.get("valid") is not True or report.get("events_checked") != stored:
        raise BenchError(
            f"crm-audit verify: valid={report.get('valid')}, "
            f"{report.get('events_checked')} of {stored} events checked: {done.stdout[:2000]}"
        )
    return {
        "verify_s": done.elapsed_s,
        "verify_events_per_s": stored / done.elapsed_s,
        "verify_peak_rss_mib": done.peak_rss_mib,
        "verify_cpu_s_per_m": done.cpu_s * 1e6 / stored,
    }


def _stream_format(bench: Bench, prefix: str) -> int:
    """2 when the seals stored say format 2 (signed in them), else 1."""
    found = bench.os.search(
        index=f"{prefix}-seals",
        body={"size": 0, "aggs": {"format": {"max": {"field": "seal.format_version"}}}},
    )["aggregations"]["format"]["value"]
    return int(found) if found else 1


def measure(
    bench: Bench, lines: Sequence[bytes], chunk: int, runs: int, say: Say
) -> tuple[list[Run], dict[str, float]]:
    """The scenario's runs, and how its one ingest went (informative)."""
    with run_scope(bench, "verify") as (prefix, directory):
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
            shipped = write_and_wait(bench.os, logs / "crm-audit.jsonl", lines, chunk, index, watch)
            sealed = check_integrity(bench, prefix, integrity)
        stored = count(bench.os, index)
        if stored != len(lines) + 1 or sealed != stored:
            raise BenchError(f"{stored} events stored, {sealed} sealed, {len(lines) + 1} written")
        stream_format = _stream_format(bench, prefix)
        say(
            f"verify: {stored:,} events (stream format {stream_format}) shipped through agent "
            f"+ collector in {shipped.elapsed_s:.1f} s; timing raw read and crm-audit verify"
        )
        results = []
        for number in range(1, runs + 1):
            run: Run = {"events": stored}
            run.update(raw_read(bench, prefix, stored, directory))
            run.update(verify(bench, prefix, integrity, stored, directory))
            run["verify_to_raw"] = run["verify_events_per_s"] / run["raw_events_per_s"]
            say(
                f"verify run {number}/{runs}: raw read {run['raw_events_per_s']:,.0f} events/s, "
                f"verify {run['verify_events_per_s']:,.0f} events/s "
                f"({run['verify_to_raw']:.2f}x), CPU-s per million events: raw read "
                f"{run['raw_cpu_s_per_m']:.0f}, verify {run['verify_cpu_s_per_m']:.0f}; "
                f"verify peak RSS {run['verify_peak_rss_mib']:.0f} MiB"
            )
            results.append(rounded(run))
    return results, {
        "ingest_s": round(shipped.elapsed_s, 2),
        "ingest_events": stored,
        "stream_format": stream_format,
    }
