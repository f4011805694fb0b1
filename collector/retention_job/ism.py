"""Signed evidence for the deletions ISM made (enforcer ``ism``).

ISM deletes an index on its own schedule; the collector notices afterwards: an events
index that seals name (``seal.indices``) is gone, and no retention record names it.
How ISM's deletion is told from an operator's: ISM writes every action of a managed
index to its history (``.opendistro-ism-managed-index-history-*``, on by default,
``plugins.index_state_management.history.enabled``). Only when that history holds a
``delete`` action of the class's policy for that index (by name and, where recorded,
uuid) does the collector write a record saying ISM deleted it, with the history entry's
time and policy. An index gone without such an entry (deleted by hand, or history
disabled) gets no record, and `crm-audit verify` reports its events MISSING.

What such a record cannot prove: the index itself is gone, so its per-agent sequence
runs are those of the seals naming it (``sequences_from: seals``), and its event-time
range is the index's period (from its name), not the stored documents'. ISM counts
``min_index_age`` from index creation: the record says so (``rule``), and whether the
period's end plus the delete age had passed when ISM deleted it (``early``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from collector.documents import iso_nanos
from collector.gate import seals_index
from collector.lifecycle import events_index_pattern, policy_id
from collector.retention_job.evidence import fail, record_chains, seal_ranges
from collector.retention_job.policy import DAY_NS
from collector.retention_job.records import record_id, retention_index

if TYPE_CHECKING:
    from collector.retention_job.job import RetentionJob, RunReport

ISM_HISTORY = ".opendistro-ism-managed-index-history-*"
_PERIOD = re.compile(r"-(\d{4})\.(\d{2})(?:\.(\d{2}))?$")


def period(name: str) -> tuple[int, int] | None:
    """[start, end) of an index's period in ns, from its name."""
    match = _PERIOD.search(name)
    if not match:
        return None
    year, month = int(match[1]), int(match[2])
    if match[3]:
        start = datetime(year, month, int(match[3]), tzinfo=UTC)
        end = start + timedelta(days=1)
    else:
        start = datetime(year, month, 1, tzinfo=UTC)
        end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp()) * 1_000_000_000, int(end.timestamp()) * 1_000_000_000


class IsmDeletions:
    """Finds events indices ISM deleted and records them (see the module docstring)."""

    def __init__(self, job: RetentionJob) -> None:
        self.job = job
        self.request = job.request
        self.prefix = job.prefix

    def _named_by_seals(self) -> set[str]:
        found: set[str] = set()
        after: dict[str, Any] | None = None
        while True:
            composite: dict[str, Any] = {
                "size": 1000,
                "sources": [{"index": {"terms": {"field": "seal.indices"}}}],
            }
            if after:
                composite["after"] = after
            response = self.request(
                "POST",
                f"/{seals_index(self.prefix)}/_search",
                body={"size": 0, "aggs": {"named": {"composite": composite}}},
                params={"ignore_unavailable": "true"},
            )
            if response.status != 200:
                raise fail("cannot list the indices the seals name", response)
            agg = response.body.get("aggregations", {}).get("named", {})
            buckets = agg.get("buckets", [])
            found.update(str(b["key"]["index"]) for b in buckets)
            after = agg.get("after_key")
            if not buckets or not after:
                return found

    def _existing(self) -> set[str]:
        response = self.request(
            "GET",
            f"/_cat/indices/{events_index_pattern(self.prefix)}",
            params={"format": "json", "h": "index", "expand_wildcards": "all"},
        )
        if response.status == 404:
            return set()
        if response.status != 200 or not isinstance(response.body, list):
            raise fail("cannot list the events indices", response)
        return {str(r.get("index")) for r in response.body if isinstance(r, Mapping)}

    def _recorded(self) -> set[str]:
        response = self.request(
            "POST",
            f"/{retention_index(self.prefix)}/_search",
            body={"size": 0, "aggs": {"i": {"terms": {"field": "retention.index", "size": 65535}}}},
            params={"ignore_unavailable": "true"},
        )
        if response.status != 200:
            raise fail("cannot read the retention records", response)
        buckets = response.body.get("aggregations", {}).get("i", {}).get("buckets", [])
        return {str(b["key"]) for b in buckets}

    def history(self, index: str, retention_class: str) -> dict[str, Any] | None:
        """ISM's history entry of the delete of `index` under the class's policy."""
        response = self.request(
            "POST",
            f"/{ISM_HISTORY}/_search",
            body={
                "size": 1,
                "query": {
                    "bool": {
                        "filter": [
                            {"term": {"managed_index_meta.index": index}},
                            {
                                "term": {
                                    "managed_index_meta.policy_id": policy_id(
                                        self.prefix, retention_class
                                    )
                                }
                            },
                            {"term": {"managed_index_meta.action.name": "delete"}},
                        ]
                    }
                },
                "sort": [{"history_timestamp": "desc"}],
            },
            params={"ignore_unavailable": "true", "allow_no_indices": "true"},
        )
        if response.status != 200:
            raise fail(f"cannot read ISM's history of {index}", response)
        hits = response.body.get("hits", {}).get("hits", [])
        return dict(hits[0]["_source"]) if hits else None

    def record(self, report: RunReport, *, dry_run: bool) -> None:
        gone = self._named_by_seals() - self._existing() - self._recorded()
        for index in sorted(gone):
            match = re.match(rf"^{re.escape(self.prefix)}-events-(.+)-\d{{4}}\.\d{{2}}", index)
            retention_class = match[1] if match else ""
            policy = self.job.classes.get(retention_class)
            if policy is None:
                continue
            entry = self.history(index, retention_class)
            if entry is None:
                report.kept.append(
                    f"{index}: gone, but ISM's history has no delete of it (an operator's "
                    "deletion?): no retention record, verify reports its events MISSING"
                )
                continue
            if dry_run:
                report.actions.append(f"would record ISM's deletion of {index}")
                continue
            if self.job.records is None:
                report.errors.append(f"{index}: deleted by ISM; no collector key to record it")
                continue
            meta = entry.get("managed_index_meta", {})
            when = entry.get("history_timestamp")
            deleted_ns = int(when) * 1_000_000 if isinstance(when, int) else self.job.clock_ns()
            span = period(index)
            early = None
            if span is not None and policy.phases.delete_days is not None:
                early = span[1] + int(policy.phases.delete_days * DAY_NS) > deleted_ns
            seals = seal_ranges(self.request, self.prefix, index)
            record = {
                "action": "delete",
                "class": retention_class,
                "index": index,
                "index_uuid": str(meta.get("index_uuid", "")),
                "events": {
                    "count": None,
                    "oldest": iso_nanos(span[0]) if span else "",
                    "newest": iso_nanos(span[1] - 1) if span else "",
                    "from": "index period (the index is gone)",
                },
                **record_chains(
                    {
                        chain: {
                            "sequences": [list(r) for r in runs],
                            "seals": [list(r) for r in runs],
                            "sequences_from": "seals",
                        }
                        for chain, runs in seals.items()
                    }
                ),
                "policy": {
                    "source": policy_id(self.prefix, retention_class),
                    "sha256": policy.sha256,
                    "phases": policy.phases.describe(),
                    "minimum_days": policy.minimum_days,
                    "rule": "ISM delete state reached: min_index_age counted from index creation",
                },
                "deleted_by": {
                    "enforcer": "ism",
                    "collector": self.job.holder,
                    "ism_policy": str(meta.get("policy_id", "")),
                    "ism_deleted_at": iso_nanos(deleted_ns),
                    "early": early,
                },
            }
            line = self.job.records.append(record, now_unix_nano=self.job.clock_ns())
            self.job.ensure_index()
            self.job.index_record(record_id(index, str(meta.get("index_uuid", "") or "ism")), line)
            report.actions.append(f"recorded ISM's deletion of {index}")
