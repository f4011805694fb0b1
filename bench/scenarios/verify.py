"""Verify at scale: `crm-audit verify` against a raw read of the same documents.

Data (once per scenario, not timed): the real pipeline as production runs it — a real
agent process tails a file and ships over mTLS gRPC to a real collector process with the
agent's key registered, ``require_seal`` on and signed checkpoints written
(bench.pipeline.Integrity) — so the documents are whatever format the agent and collector
of this checkout write. The corpus (N lines plus the warm-up line) is appended, every
line is waited for in OpenSearch, the integrity work is checked (every event under a
verified seal, a signed checkpoint of the last sequence), then agent and collector stop:
nothing else writes or competes for the CPU while the clock runs.

Per run, alternating (each a fresh process, wall time including its start-up, peak RSS
as its VmHWM, polled; a worker process verify might start is not counted):

- raw read: `python -m bench.rawread` reads the agent's events (full ``_source``) and
  seals with a point in time + search_after, verify's page size, through opensearch-py,
  parsing each page's JSON and nothing more;
- verify: `crm-audit verify --keys --checkpoints --checkpoint-key --format json`, which
  must exit 0 with ``valid`` true and have checked every stored event.

Reported: events/s of both, verify ÷ raw read, verify's peak RSS.
"""

from __future__ import annotations

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
from bench.procstat import peak_rss_kib
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


def _peak_kib(pid: int, known: int) -> int:
    try:
        return max(known, peak_rss_kib(pid))
    except (OSError, ValueError):  # exited between two polls
        return known


def run_child(argv: Sequence[str], env: dict[str, str], timeout: float, scratch: Path) -> Finished:
    """Run `argv` to its end; its wall time and peak RSS.

    The peak is VmHWM polled every 20 ms until the process exits (monotonic, so only
    growth in its last 20 ms can be missed). Not wait4's ru_maxrss: Linux carries the
    forking parent's high-water mark across exec into it, which here is the bench's.
    """
    out, err = scratch / "child.out", scratch / "child.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=env)
        deadline = started + timeout
        peak = 0
        while True:
            peak = _peak_kib(proc.pid, peak)
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
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
                f"({run['verify_to_raw']:.2f}x), verify peak RSS "
                f"{run['verify_peak_rss_mib']:.0f} MiB"
            )
            results.append(rounded(run))
    return results, {
        "ingest_s": round(shipped.elapsed_s, 2),
        "ingest_events": stored,
        "stream_format": stream_format,
    }
