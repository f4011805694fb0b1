"""Medians and percentiles of measured runs (pure functions)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median_of_runs(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per key, the median over the runs that have a finite value for it."""
    keys: list[str] = []
    for run in runs:
        keys.extend(key for key in run if key not in keys)
    medians: dict[str, float] = {}
    for key in keys:
        values = [
            float(run[key])
            for run in runs
            if isinstance(run.get(key), int | float) and math.isfinite(float(run[key]))
        ]
        if values:
            medians[key] = statistics.median(values)
    return medians


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the divisor is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def rate_between(samples: Sequence[tuple[float, int]], low: float, high: float) -> float | None:
    """Events/s between the first samples reaching fractions `low` and `high` of the last.

    `samples` are (seconds since start, events done so far), in time order; the rate
    over the middle of a run leaves out start-up and the last partial poll.
    """
    if not samples:
        return None
    total = samples[-1][1]
    first = next((s for s in samples if s[1] >= low * total), None)
    last = next((s for s in samples if s[1] >= high * total), None)
    if first is None or last is None or last[0] <= first[0]:
        return None
    return (last[1] - first[1]) / (last[0] - first[0])
