"""Collect every section from OpenSearch and the verifier, render, sign."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from collector.checkpoints import CheckpointView
from collector.index import Requester
from collector.report import signing
from collector.report.access import AccessReader
from collector.report.alerts import AlertsReader
from collector.report.coverage import CoverageReader
from collector.report.errors import ReportInputError
from collector.report.integrity import run_integrity
from collector.report.query import Period, Queries, iso
from collector.report.render import ReportData, render
from collector.report.retention import RetentionReader
from collector.retention_job.records import RetentionRecords

DEFAULT_MIN_RETENTION_DAYS = 2190.0  # 6 years: SEC 17a-4(b)
DEFAULT_SILENCE_GAP = timedelta(minutes=15)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` (no unit: seconds)."""
    match = _DURATION.match(text.strip())
    if not match or float(match[1]) <= 0:
        raise ValueError(f"not a positive duration: {text!r} (e.g. 15m, 2h, 1d)")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2] or "s"])


def parse_moment(text: str, *, end: bool) -> datetime:
    """A date (``2026-10-01``; as an end: the end of that day) or an ISO 8601 time."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            day = datetime.combine(date.fromisoformat(text.strip()), datetime.min.time(), UTC)
            return day + timedelta(days=1) if end else day
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not a date or ISO 8601 time: {text!r} (e.g. 2026-10-01)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_period(start: str, end: str) -> Period:
    """``--from``/``--to`` as typed; `--to` of a plain date includes that whole day."""
    period = Period(parse_moment(start, end=False), parse_moment(end, end=True))
    if period.end <= period.start:
        raise ReportInputError("report: --to must be after --from")
    if period.end - period.start > timedelta(days=400):
        raise ReportInputError("report: the period is longer than 400 days; report per quarter")
    return period


@dataclass(frozen=True)
class ReportOptions:
    """What `build_report` needs besides OpenSearch."""

    prefix: str
    period: Period
    now: datetime
    gap: timedelta = DEFAULT_SILENCE_GAP
    min_retention_days: float = DEFAULT_MIN_RETENTION_DAYS
    max_rows: int = 1000
    keys: Callable[[str], Mapping[str, Ed25519PublicKey]] | None = None
    registered: frozenset[str] | None = None
    checkpoints: CheckpointView | None = None
    policy_files: Mapping[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    # signed retention records verified with the collector key (None: no key given)
    retention_records: RetentionRecords | None = None
    signing_key: Ed25519PrivateKey | None = None


def _cluster(queries: Queries) -> str:
    status, body = queries.get("/")
    if status != 200 or not isinstance(body, dict):
        return "unknown"
    version = body.get("version", {}).get("number", "?")
    return f"{body.get('cluster_name', '?')} (OpenSearch {version})"


def collect(request: Requester, options: ReportOptions) -> ReportData:
    """Every section's data (read-only: nothing is written to OpenSearch)."""
    queries = Queries(request)
    period = options.period
    registered = set(options.registered) if options.registered is not None else None
    return ReportData(
        prefix=options.prefix,
        period=period,
        generated=options.now,
        cluster=_cluster(queries),
        min_retention_days=options.min_retention_days,
        coverage=CoverageReader(
            queries, options.prefix, period, gap=options.gap, now=options.now, registered=registered
        ).read(),
        integrity=run_integrity(
            request,
            options.prefix,
            options.keys,
            checkpoints=options.checkpoints,
            time_from=period.start,
            time_to=period.end,
            now=options.now,
            retention_records=options.retention_records,
            expected=options.registered or (),
        ),
        access=AccessReader(queries, options.prefix, period, max_rows=options.max_rows).read(),
        alerts=AlertsReader(queries, options.prefix, period, max_rows=options.max_rows).read(),
        retention=RetentionReader(
            queries,
            options.prefix,
            minimum_days=options.min_retention_days,
            policy_files=dict(options.policy_files),
            records=options.retention_records,
        ).read(),
    )


def build_report(request: Requester, options: ReportOptions) -> tuple[str, ReportData]:
    """The signed (or, without a key, digest-only) HTML document and its data."""
    data = collect(request, options)
    meta = {
        "generated": iso(options.now),
        "period": {"from": iso(options.period.start), "to": iso(options.period.end)},
        "prefix": options.prefix,
    }
    document = signing.sign(render(data), data.integrity.summary, meta, options.signing_key)
    return document, data
