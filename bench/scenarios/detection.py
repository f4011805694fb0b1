"""Detection: log line written -> alert document in ``{prefix}-alerts``, under load.

Per run: a fresh index prefix, a real collector with ``detection: {rules:
config/rules.yaml, interval_s}`` (every shipped rule enabled) and a real agent tailing
the run's log directory. Once the windowed rules have been evaluated for the first
time, a background thread appends ordinary CRM traffic (`crm-audit sample`'s
generator without its suspicious patterns, timestamps starting now) at `rate`
lines/s to one file; after a short settling period, incidents are written to a second
file every `spacing_s` seconds (not a multiple of the interval, so incidents fall at
every phase of the evaluation cycle):

- per-event rule ``bulk-export`` (kind bulk_export, evaluated as each batch is indexed):
  one ``record.export`` line with ``record_count`` 2500;
- windowed rule ``failed-login-burst`` (kind failed_login_burst, an aggregation query
  every ``interval_s``): 10 failed logins of one user in one write; the 10th is the
  trigger.

Every incident has its own user (and source address), so suppression and the other
rules keyed by user or address never merge two incidents. Its write time is the wall
clock right after the write returned; the main thread searches ``{prefix}-alerts``
(written with ``refresh=true``, so no refresh is forced) every `POLL_S` for the rule
and the incident's user and keeps the first time the document was seen. Latency =
seen - written; resolution about `POLL_S`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensearchpy.exceptions import TransportError

from bench.corpus import warmup_line
from bench.pipeline import Bench, agent, collector, run_scope
from bench.processes import BenchError, Proc, wait_until
from bench.scenarios.base import Run, Say, rounded
from bench.scenarios.shipping import wait_warmed
from bench.stats import percentile
from collector.admin.sample import format_timestamp, generate, to_line

POLL_S = 0.05
SETTLE_S = 120.0  # how long after the last incident its alert may still appear
WARMUP_S = 3.0  # background traffic flowing before the first incident
BULK_RULE = "bulk-export"
BURST_RULE = "failed-login-burst"
BURST_SIZE = 10
EXPORT_RECORDS = 2500


def _record(user: str, ip: str, event: str, outcome: str, **extra: Any) -> bytes:
    record = {
        "timestamp": format_timestamp(dt.datetime.now(dt.UTC)),
        "event": event,
        "outcome": outcome,
        "user": {"id": f"id-{user}", "name": user, "roles": ["advisor"]},
        "source_ip": ip,
        **extra,
    }
    return (to_line(record) + "\n").encode("utf-8")


def bulk_export_lines(user: str, ip: str) -> bytes:
    return _record(
        user,
        ip,
        "record.export",
        "success",
        object={"type": "customer", "id": f"report-{user}"},
        record_count=EXPORT_RECORDS,
        message=f"{user} exported {EXPORT_RECORDS} customer records",
    )


def failed_burst_lines(user: str, ip: str) -> bytes:
    return b"".join(
        _record(user, ip, "login", "failure", reason="bad_password") for _ in range(BURST_SIZE)
    )


@dataclass
class Background:
    """Appends `lines` (cycled) to `path` at `rate` lines/s until stopped (a thread)."""

    path: Path
    lines: Sequence[bytes]
    rate: float
    tick_s: float = 0.02
    written: int = 0
    error: Exception | None = None
    span_s: float = 0.0  # from start to stop
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="background", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        try:
            source: Iterator[bytes] = itertools.cycle(self.lines)
            started = time.monotonic()
            with self.path.open("ab", buffering=0) as handle:
                while not self._stop.is_set():
                    due = int((time.monotonic() - started) * self.rate)
                    if due > self.written:
                        block = [next(source) for _ in range(due - self.written)]
                        handle.write(b"".join(block))
                        self.written += len(block)
                    self.span_s = time.monotonic() - started
                    self._stop.wait(self.tick_s)
        except Exception as exc:  # noqa: BLE001 - reported by the scenario, not lost in a thread
            self.error = exc


def background_lines(count: int, rate: float, seed: int = 11) -> list[bytes]:
    """Ordinary sample traffic whose timestamps start now and advance at `rate`/s."""
    start = dt.datetime.now(dt.UTC)
    return [
        (to_line(record) + "\n").encode("utf-8")
        for record in generate(count, seed, start, rate_per_sec=rate, suspicious=False)
    ]


def _collector_extra(bench: Bench, interval_s: float) -> str:
    rules = bench.repo / "config" / "rules.yaml"
    return f"\ndetection:\n  rules: {rules}\n  interval_s: {interval_s:g}\n"


def _evaluated_once(bench: Bench, prefix: str) -> bool:
    try:
        doc = bench.os.get(index=f"{prefix}-leases", id=f"rule:{BURST_RULE}", ignore=404)
    except TransportError:
        return False
    return bool(doc.get("_source", {}).get("lease", {}).get("evaluated_to"))


def _alerts_seen(
    bench: Bench, prefix: str, wanted: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Which (rule id, user) pairs of `wanted` have an alert document now."""
    users = sorted({user for _, user in wanted})
    rules = sorted({rule for rule, _ in wanted})
    result = bench.os.search(
        index=f"{prefix}-alerts",
        body={
            "size": len(wanted) * 2 + 10,
            "_source": ["alert.rule.id", "alert.key"],
            "query": {
                "bool": {
                    "filter": [
                        {"term": {"alert.kind": "detection"}},
                        {"terms": {"alert.rule.id": rules}},
                        {"terms": {"alert.key": users}},
                    ]
                }
            },
        },
        ignore_unavailable=True,
    )
    found = {
        (str(hit["_source"]["alert"]["rule"]["id"]), str(hit["_source"]["alert"]["key"]))
        for hit in result["hits"]["hits"]
    }
    return [pair for pair in wanted if pair in found]


@dataclass
class _Incidents:
    """Write times and first-seen times of (rule id, user) incidents."""

    written: dict[tuple[str, str], float] = field(default_factory=dict)
    seen: dict[tuple[str, str], float] = field(default_factory=dict)

    def outstanding(self) -> list[tuple[str, str]]:
        return [pair for pair in self.written if pair not in self.seen]

    def latencies(self, rule: str) -> list[float]:
        return [self.seen[p] - at for p, at in self.written.items() if p[0] == rule]


def _poll(bench: Bench, prefix: str, incidents: _Incidents) -> None:
    outstanding = incidents.outstanding()
    if not outstanding:
        return
    try:
        hits = _alerts_seen(bench, prefix, outstanding)
    except TransportError:
        hits = []  # e.g. the alerts index not created yet: searched again next poll
    now = time.time()
    for pair in hits:
        incidents.seen.setdefault(pair, now)


def _check(procs: Sequence[Proc], background: Background, what: str) -> None:
    if background.error is not None:
        raise BenchError(f"background writer failed: {background.error}")
    for proc in procs:
        proc.check_alive(what)


def run_once(
    bench: Bench, *, incidents: int, rate: float, interval_s: float, spacing_s: float
) -> Run:
    with run_scope(bench, "detection") as (prefix, directory):
        logs = directory / "logs"
        logs.mkdir()
        (logs / "warmup.jsonl").write_bytes(warmup_line(prefix))
        span = WARMUP_S + incidents * spacing_s + 4 * interval_s + 30
        with (
            collector(bench, directory, prefix, extra=_collector_extra(bench, interval_s)) as (
                collector_proc,
                port,
            ),
            agent(bench, directory, str(logs / "*.jsonl"), port) as agent_proc,
        ):
            procs = (collector_proc, agent_proc)
            wait_warmed(bench.os, f"{prefix}-events-*", procs)
            wait_until(
                lambda: _evaluated_once(bench, prefix),
                "the windowed rules to be evaluated once",
                timeout=120,
                interval=0.2,
                watch=procs,
            )
            # Generated now, so record times track write times (cycled if a run is slow).
            lines = background_lines(int(rate * span), rate)
            background = Background(logs / "crm-audit.jsonl", lines, rate)
            background.start()
            try:
                record = _Incidents()
                next_at = time.monotonic() + WARMUP_S
                with (logs / "incidents.jsonl").open("ab", buffering=0) as handle:
                    for number in range(incidents):
                        while time.monotonic() < next_at:
                            _poll(bench, prefix, record)
                            _check(procs, background, "incidents were being written")
                            time.sleep(POLL_S)
                        exporter = f"exp-{prefix}-{number}"
                        guesser = f"burst-{prefix}-{number}"
                        handle.write(bulk_export_lines(exporter, f"10.231.{number % 250}.7"))
                        record.written[(BULK_RULE, exporter)] = time.time()
                        handle.write(failed_burst_lines(guesser, f"10.232.{number % 250}.9"))
                        record.written[(BURST_RULE, guesser)] = time.time()
                        next_at += spacing_s
                    deadline = time.monotonic() + SETTLE_S
                    while record.outstanding():
                        _poll(bench, prefix, record)
                        _check(procs, background, "alerts were outstanding")
                        if time.monotonic() > deadline:
                            missing = record.outstanding()
                            raise BenchError(
                                f"{len(missing)} incident alerts not raised {SETTLE_S:.0f} s "
                                f"after the last incident: {missing[:4]}; collector log "
                                f"{collector_proc.log_path}:\n{collector_proc.log_tail(1500)}"
                            )
                        time.sleep(POLL_S)
            finally:
                background.stop()
        per_event = record.latencies(BULK_RULE)
        windowed = record.latencies(BURST_RULE)
        return rounded(
            {
                "incidents": incidents,
                "background_rate_per_s": rate,
                "background_lines": background.written,
                "background_achieved_per_s": background.written / max(background.span_s, 1e-9),
                "interval_s": interval_s,
                "inline_p50_s": percentile(per_event, 50),
                "inline_p99_s": percentile(per_event, 99),
                "inline_max_s": max(per_event),
                "windowed_p50_s": percentile(windowed, 50),
                "windowed_p99_s": percentile(windowed, 99),
                "windowed_max_s": max(windowed),
            }
        )


def measure(
    bench: Bench,
    *,
    incidents: int,
    rate: float,
    interval_s: float,
    spacing_s: float,
    runs: int,
    say: Say,
) -> list[Run]:
    results = []
    for number in range(1, runs + 1):
        run = run_once(
            bench, incidents=incidents, rate=rate, interval_s=interval_s, spacing_s=spacing_s
        )
        say(
            f"detection run {number}/{runs}: per-event p50 {run['inline_p50_s']:.2f} s / "
            f"p99 {run['inline_p99_s']:.2f} s, windowed p50 {run['windowed_p50_s']:.2f} s / "
            f"p99 {run['windowed_p99_s']:.2f} s ({incidents} incidents each, background "
            f"{run['background_achieved_per_s']:.0f} lines/s)"
        )
        results.append(run)
    return results
