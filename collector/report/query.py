"""Read-only OpenSearch queries the report sections share (through a `Requester`)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from collector.documents import iso_nanos
from collector.index import Requester
from collector.report.errors import ReportDataError

_MISSING_OK = {"ignore_unavailable": "true", "allow_no_indices": "true"}


@dataclass(frozen=True)
class Period:
    """The reviewed period, ``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    @property
    def days(self) -> list[datetime]:
        """Midnight (UTC) of every day the period touches."""
        first = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        out = []
        day = first
        while day < self.end:
            out.append(day)
            day = datetime.fromtimestamp(day.timestamp() + 86400, UTC)
        return out


def iso(moment: datetime) -> str:
    return iso_nanos(int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000)


def time_range(lo: datetime | None, hi: datetime | None) -> dict[str, Any]:
    bounds: dict[str, str] = {}
    if lo is not None:
        bounds["gte"] = iso(lo)
    if hi is not None:
        bounds["lt"] = iso(hi)
    return {"range": {"@timestamp": bounds}}


def bool_filter(*clauses: Mapping[str, Any]) -> dict[str, Any]:
    return {"bool": {"filter": list(clauses)}}


def from_millis(value: float) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


class Queries:
    """Search, count and paged composite aggregations; a missing index reads as empty."""

    def __init__(self, request: Requester) -> None:
        self.request = request

    def search(self, pattern: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = self.request("POST", f"/{pattern}/_search", body=body, params=_MISSING_OK)
        if response.status == 404 and "index_not_found" in json.dumps(response.body):
            return {"hits": {"total": {"value": 0}, "hits": []}, "aggregations": {}}
        if response.status != 200:
            raise ReportDataError(
                f"search on {pattern} failed: HTTP {response.status} {_reason(response.body)}"
            )
        result: dict[str, Any] = response.body
        return result

    def count(self, pattern: str, query: Mapping[str, Any]) -> int:
        body = {"size": 0, "track_total_hits": True, "query": query}
        return int(self.search(pattern, body)["hits"]["total"]["value"])

    def aggs(
        self, pattern: str, query: Mapping[str, Any], aggs: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = {"size": 0, "track_total_hits": True, "query": query, "aggs": aggs}
        result = self.search(pattern, body)
        out: dict[str, Any] = result.get("aggregations") or {}
        return out

    def composite(
        self,
        pattern: str,
        query: Mapping[str, Any],
        sources: Sequence[Mapping[str, Any]],
        sub_aggs: Mapping[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {"size": 1000, "sources": list(sources)}
            if after:
                composite["after"] = after
            agg: dict[str, Any] = {"composite": composite}
            if sub_aggs:
                agg["aggs"] = dict(sub_aggs)
            found = self.aggs(pattern, query, {"c": agg}).get("c", {})
            buckets = found.get("buckets", [])
            yield from buckets
            after = found.get("after_key")
            if not buckets or not after:
                return

    def exists(self, index: str) -> bool:
        response = self.request(
            "GET", f"/{index}/_settings", params={"filter_path": "*.settings.index.uuid"}
        )
        if response.status in (200, 404):
            return response.status == 200
        raise ReportDataError(f"cannot check index {index}: HTTP {response.status}")

    def get(self, path: str, params: Mapping[str, str] | None = None) -> tuple[int, Any]:
        response = self.request("GET", path, params=params)
        if response.status == 0:
            raise ReportDataError(f"OpenSearch unreachable: {_reason(response.body)}")
        if response.status in (401, 403):
            # Not allowed is not absent: without this the report read a refused
            # _cat/plugins as "ISM not installed" and a refused _cat/indices as "no indices".
            raise ReportDataError(
                f"GET {path}: HTTP {response.status} {_reason(response.body)}".rstrip()
            )
        return response.status, response.body


def _reason(body: Any) -> str:
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            return str(error.get("reason") or error.get("type") or "")[:200]
        return str(error or "")[:200]
    return ""
