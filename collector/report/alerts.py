"""Alerts: by rule and severity over time, with their status and the responses taken.

``{prefix}-alerts`` holds detection alerts (``alert.kind: detection``, with rule,
severity and status), the records of responses to them (``alert.kind: response``) and
integrity alerts from the collector (``alert.kind`` = the finding, e.g. ``gap``); the
latter carry no severity or status and are shown as severity "integrity".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from collector.gate import alerts_index
from collector.report.query import Period, Queries, bool_filter, time_range

SEVERITIES = ("critical", "high", "medium", "low", "integrity")
NO_STATUS = "not tracked"


@dataclass(frozen=True)
class RuleRow:
    """Alerts of one rule and severity."""

    rule: str
    severity: str
    count: int
    statuses: tuple[tuple[str, int], ...]
    responses: int
    first: str
    last: str


@dataclass(frozen=True)
class AlertRow:
    """One alert in the list of the most serious ones."""

    time: str
    rule: str
    severity: str
    status: str
    key: str
    reason: str


@dataclass
class Alerts:
    """Everything the alerts section shows."""

    total: int
    rules: list[RuleRow]
    per_day: dict[str, list[int]]  # severity -> alerts per day
    recent: list[AlertRow]
    days: list[datetime]


def _not_response() -> dict[str, Any]:
    return {"bool": {"must_not": {"term": {"alert.kind": "response"}}}}


def _label(src: dict[str, Any]) -> tuple[str, str]:
    alert = src.get("alert", {})
    kind = str(alert.get("kind", ""))
    if kind == "detection":
        return str(alert.get("rule", {}).get("id", "?")), str(alert.get("severity", "?"))
    return f"integrity: {kind}", "integrity"


class AlertsReader:
    """Builds `Alerts` from OpenSearch."""

    def __init__(self, queries: Queries, prefix: str, period: Period, *, max_rows: int) -> None:
        self.q = queries
        self.index = alerts_index(prefix)
        self.period = period
        self.max_rows = max_rows

    def read(self) -> Alerts:
        period = time_range(self.period.start, self.period.end)
        query = bool_filter(period, _not_response())
        keys = [
            {"kind": {"terms": {"field": "alert.kind", "missing_bucket": True}}},
            {"rule": {"terms": {"field": "alert.rule.id", "missing_bucket": True}}},
            {"severity": {"terms": {"field": "alert.severity", "missing_bucket": True}}},
            {"status": {"terms": {"field": "alert.status", "missing_bucket": True}}},
        ]
        stats = {
            "first": {"min": {"field": "@timestamp"}},
            "last": {"max": {"field": "@timestamp"}},
        }
        grouped: dict[tuple[str, str], dict[str, Any]] = {}
        total = 0
        for bucket in self.q.composite(self.index, query, keys, stats):
            key = bucket["key"]
            src = {
                "alert": {
                    "kind": key["kind"],
                    "rule": {"id": key["rule"]},
                    "severity": key["severity"],
                }
            }
            rule, severity = _label(src)
            entry = grouped.setdefault(
                (rule, severity), {"count": 0, "statuses": {}, "first": None, "last": None}
            )
            count = int(bucket["doc_count"])
            total += count
            entry["count"] += count
            status = str(key["status"] or NO_STATUS)
            entry["statuses"][status] = entry["statuses"].get(status, 0) + count
            first, last = (
                bucket["first"].get("value_as_string"),
                bucket["last"].get("value_as_string"),
            )
            entry["first"] = min(filter(None, (entry["first"], first)), default=None)
            entry["last"] = max(filter(None, (entry["last"], last)), default=None)
        responses = self._responses(period)
        rules = [
            RuleRow(
                rule=rule,
                severity=severity,
                count=e["count"],
                statuses=tuple(sorted(e["statuses"].items())),
                responses=responses.get(rule, 0),
                first=e["first"] or "",
                last=e["last"] or "",
            )
            for (rule, severity), e in grouped.items()
        ]
        rules.sort(key=lambda r: (_rank(r.severity), -r.count, r.rule))
        return Alerts(total, rules, self._per_day(query), self._recent(query), self.period.days)

    def _responses(self, period: dict[str, Any]) -> dict[str, int]:
        query = bool_filter(period, {"term": {"alert.kind": "response"}})
        aggs = {"rules": {"terms": {"field": "alert.rule.id", "size": 1000}}}
        found = self.q.aggs(self.index, query, aggs)
        return {
            str(b["key"]): int(b["doc_count"]) for b in found.get("rules", {}).get("buckets", [])
        }

    def _per_day(self, query: dict[str, Any]) -> dict[str, list[int]]:
        index = {int(day.timestamp() * 1000): i for i, day in enumerate(self.period.days)}
        aggs = {
            "days": {
                "date_histogram": {
                    "field": "@timestamp",
                    "calendar_interval": "day",
                    "time_zone": "UTC",
                    "min_doc_count": 0,
                },
                "aggs": {
                    "kind": {"terms": {"field": "alert.kind", "size": 100}},
                    "sev": {"terms": {"field": "alert.severity", "size": 10}},
                },
            }
        }
        found = self.q.aggs(self.index, query, aggs)
        series = {name: [0] * len(index) for name in SEVERITIES}
        for bucket in found.get("days", {}).get("buckets", []):
            i = index.get(int(bucket["key"]))
            if i is None:
                continue
            for sev in bucket["sev"]["buckets"]:
                name = str(sev["key"])
                series.setdefault(name, [0] * len(index))[i] += int(sev["doc_count"])
            for kind in bucket["kind"]["buckets"]:
                if kind["key"] != "detection":
                    series["integrity"][i] += int(kind["doc_count"])
        return {name: values for name, values in series.items() if any(values)}

    def _recent(self, query: dict[str, Any]) -> list[AlertRow]:
        serious = {
            "bool": {
                "filter": [query],
                "should": [
                    {"terms": {"alert.severity": ["high", "critical"]}},
                    {"bool": {"must_not": {"term": {"alert.kind": "detection"}}}},
                ],
                "minimum_should_match": 1,
            }
        }
        found = self.q.search(
            self.index,
            {
                "size": self.max_rows,
                "query": serious,
                "sort": [{"@timestamp": "desc"}],
            },
        )
        rows = []
        for hit in found["hits"]["hits"]:
            src = hit["_source"]
            rule, severity = _label(src)
            alert = src.get("alert", {})
            key = alert.get("key") or (
                f"{src.get('agent', {}).get('id', '')} "
                f"{alert.get('first_sequence', '')}-{alert.get('last_sequence', '')}"
            )
            rows.append(
                AlertRow(
                    time=str(src.get("@timestamp", "")),
                    rule=rule,
                    severity=severity,
                    status=str(alert.get("status") or NO_STATUS),
                    key=str(key),
                    reason=str(alert.get("reason", ""))[:300],
                )
            )
        return rows


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)
