"""The shipping scenarios measured in rounds: run n of the ceiling, end to end, rsyslog
and syslog-ng one after the other, then run n + 1 of each.

The ratios the goals are stated in (end to end ÷ ceiling, end to end ÷ rsyslog) compare
runs of different scenarios. Measured one scenario after the other, each scenario's
runs met whatever the shared machine did during its own minute: in two `make bench`
runs of the same code on 2026-12-07 the ceiling's OpenSearch CPU per document was 157
and 236 µs (same documents, same settings) and the end-to-end ÷ ceiling ratio 0.54 and
0.75. In rounds, the runs a ratio compares are minutes apart at most, whatever the
machine does over the whole benchmark.

Each contender first gets `warmups` unreported runs (in every scenario the first run
cost OpenSearch 1.3-2x the CPU per document of the runs after it); the ceiling's grid
of probes is its warm-up. A contender that fails is reported failed and leaves the
rounds; the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.scenarios.base import Run, Say, ScenarioResult


@dataclass
class Contender:
    """One scenario in the rounds: how to measure one run and how to describe it."""

    result: ScenarioResult
    once: Callable[[], Run]
    describe: Callable[[Run], str]
    warm: bool = True  # gets the warm-up runs (the ceiling's probes already warmed it)


def run_rounds(
    contenders: Sequence[Contender],
    *,
    runs: int,
    warmups: int,
    say: Say,
    fail: Callable[[ScenarioResult, BaseException, Say], None],
) -> None:
    """Measure every contender `runs` times, in rounds; their results get the runs."""

    def measure(contender: Contender, label: str) -> Run | None:
        result = contender.result
        started = time.monotonic()
        try:
            run = contender.once()
        except Exception as exc:  # noqa: BLE001 - one failed scenario must not end the rest
            fail(result, exc, say)
            return None
        finally:
            result.seconds += time.monotonic() - started
        say(f"{result.name} {label}: {contender.describe(run)}")
        return run

    for contender in contenders:
        if not contender.warm:
            continue
        for number in range(1, warmups + 1):
            if contender.result.status == "ok":
                measure(contender, f"warm-up {number}/{warmups} (not reported)")
    for number in range(1, runs + 1):
        for contender in contenders:
            if contender.result.status != "ok":
                continue
            run = measure(contender, f"run {number}/{runs}")
            if run is not None:
                contender.result.runs.append(run)
