"""Retention per class: policy, who enforces it, indices, deletions, legal holds, verdict.

The policy of a class comes from the cluster's ISM plugin when it is installed
(``_plugins/_ism/policies/{prefix}-{class}``, enforced by ISM), otherwise from the
policy files the collector was configured with (``--policies DIR``:
``ism-{class}.json``), which the collector's retention job applies by event time: it is
reported enforced when the job's lease (``{prefix}-leases``, ``retention``) shows it ran,
not enforced otherwise. The retention of a policy is the ``min_index_age`` of the
transition into its state that deletes.

The indices listed are the events indices. A class's batches indices
(``{prefix}-batches-*``, `collector.batchbytes`) are not listed: they are governed with
their events index (same policy, job, holds) and hold no event documents of their own;
a hold lists them by name, and a deletion's record names them (``batches``).

Deletions come from the signed retention records (`collector.retention_job.records`):
only records whose signature verifies with the collector key given to the report are
listed; the others are named as problems.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.lifecycle import ISM_COMPONENT, events_index_pattern, policy_id
from collector.report.errors import ReportInputError
from collector.report.query import Queries
from collector.retention_job.records import RetentionRecords

ENFORCED = "enforced by ISM"
BY_COLLECTOR = "enforced by the collector's retention job"
NOT_ENFORCED = "ISM not installed and the collector's retention job never ran: not enforced"
MEETS = "MEETS"
FAILS = "FAILS"
UNENFORCED = "NOT ENFORCED"
NO_POLICY = "NO POLICY"
_AGE = re.compile(r"^(\d+(?:\.\d+)?)(d|h|m|s|ms)$")
_UNIT_DAYS = {"d": 1.0, "h": 1 / 24, "m": 1 / 1440, "s": 1 / 86400, "ms": 1 / 86_400_000}


@dataclass(frozen=True)
class IndexInfo:
    """One events index of a class."""

    name: str
    created: str
    docs: int
    size: str


@dataclass
class ClassRetention:
    """What the retention section shows for one class."""

    name: str
    policy_source: str  # "ISM policy crm-audit-standard" / "file ism-standard.json" / ""
    enforcement: str
    retention_days: float | None  # None: the policy never deletes (or no policy)
    deletes: bool
    indices: list[IndexInfo] = field(default_factory=list)
    managed: int | None = None  # indices ISM manages (None: unknown)
    verdict: str = NO_POLICY


@dataclass(frozen=True)
class Deletion:
    """One deletion a verified, signed retention record attests."""

    retention_class: str
    index: str
    recorded: str  # when the record was signed (before the delete)
    enforcer: str  # collector | ism
    collector: str
    oldest: str
    newest: str
    documents: int | None
    rule: str
    agents: int


@dataclass
class Retention:
    """Retention for every class plus legal holds and signed deletions."""

    ism: bool
    minimum_days: float
    classes: list[ClassRetention]
    holds_index: str
    holds: list[dict[str, Any]] | None  # None: no holds index
    job_last_run: str = ""  # when the collector's retention job last took its lease
    deletions: list[Deletion] | None = None  # None: no collector key to check records
    record_problems: list[str] = field(default_factory=list)


def policy_retention(policy: dict[str, Any]) -> tuple[bool, float | None]:
    """(deletes at all, days after which it deletes) of an ISM policy body."""
    states = policy.get("policy", policy).get("states", [])
    deleting = {
        s.get("name") for s in states if any("delete" in action for action in s.get("actions", []))
    }
    if not deleting:
        return False, None
    ages: list[float] = []
    for state in states:
        for transition in state.get("transitions", []):
            if transition.get("state_name") in deleting:
                age = str(transition.get("conditions", {}).get("min_index_age", ""))
                match = _AGE.match(age)
                if match:
                    ages.append(float(match[1]) * _UNIT_DAYS[match[2]])
    return True, (min(ages) if ages else 0.0)


def read_policy_files(directory: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """class -> (file name, body) of every ``ism-{class}.json`` in `directory`."""
    if not directory.is_dir():
        raise ReportInputError(f"--policies: not a directory: {directory}")
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for path in sorted(directory.glob("ism-*.json")):
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReportInputError(f"{path}: not a readable ISM policy: {exc}") from None
        out[path.stem.removeprefix("ism-")] = (path.name, body)
    return out


class RetentionReader:
    """Builds `Retention` from the cluster and the policy files."""

    def __init__(
        self,
        queries: Queries,
        prefix: str,
        *,
        minimum_days: float,
        policy_files: dict[str, tuple[str, dict[str, Any]]],
        records: RetentionRecords | None = None,
    ) -> None:
        self.q = queries
        self.prefix = prefix
        self.minimum_days = minimum_days
        self.policy_files = policy_files
        self.records = records
        self.job_last_run = ""

    def _job_last_run(self) -> str:
        status, body = self.q.get(f"/{self.prefix}-leases/_doc/retention")
        if status != 200 or not isinstance(body, dict):
            return ""
        return str(body.get("_source", {}).get("@timestamp", ""))

    def _deletions(self) -> list[Deletion] | None:
        if self.records is None:
            return None
        out: list[Deletion] = []
        for record in self.records.records:
            body = record.body
            events = body.get("events", {})
            count = events.get("count")
            out.append(
                Deletion(
                    str(body.get("class", "")),
                    record.index,
                    record.time,
                    record.enforcer,
                    str(body.get("deleted_by", {}).get("collector", "")),
                    str(events.get("oldest", "")),
                    str(events.get("newest", "")),
                    int(count) if isinstance(count, int) else None,
                    str(body.get("policy", {}).get("rule", "")),
                    len(record.agents),
                )
            )
        return sorted(out, key=lambda d: (d.recorded, d.index))

    def ism_installed(self) -> bool:
        status, body = self.q.get("/_cat/plugins", {"format": "json"})
        if status != 200 or not isinstance(body, list):
            return False
        return any(isinstance(r, dict) and r.get("component") == ISM_COMPONENT for r in body)

    def _indices(self) -> dict[str, list[IndexInfo]]:
        pattern = events_index_pattern(self.prefix)
        status, body = self.q.get(
            f"/_cat/indices/{pattern}",
            {
                "format": "json",
                "h": "index,creation.date.string,docs.count,store.size",
                "expand_wildcards": "open",
            },
        )
        found: dict[str, list[IndexInfo]] = {}
        if status != 200 or not isinstance(body, list):
            return found
        head = f"{self.prefix}-events-"
        for row in body:
            name = str(row.get("index", ""))
            match = re.match(rf"^{re.escape(head)}(.+)-(\d{{4}}\.\d{{2}}(?:\.\d{{2}})?)$", name)
            if not match:
                continue
            found.setdefault(match[1], []).append(
                IndexInfo(
                    name,
                    str(row.get("creation.date.string", "")),
                    int(row.get("docs.count") or 0),
                    str(row.get("store.size", "")),
                )
            )
        for infos in found.values():
            infos.sort(key=lambda i: i.name)
        return found

    def _ism_policy(self, retention_class: str) -> dict[str, Any] | None:
        status, body = self.q.get(
            f"/_plugins/_ism/policies/{policy_id(self.prefix, retention_class)}"
        )
        return body if status == 200 and isinstance(body, dict) else None

    def _managed(self, retention_class: str) -> int | None:
        status, body = self.q.get(
            f"/_plugins/_ism/explain/{events_index_pattern(self.prefix, retention_class)}"
        )
        if status != 200 or not isinstance(body, dict):
            return None
        count = 0
        for info in body.values():
            if isinstance(info, dict) and (
                info.get("index.plugins.index_state_management.policy_id") or info.get("policy_id")
            ):
                count += 1
        return count

    def read(self) -> Retention:
        ism = self.ism_installed()
        self.job_last_run = "" if ism else self._job_last_run()
        indices = self._indices()
        classes: list[ClassRetention] = []
        for name in sorted(set(indices) | set(self.policy_files)):
            row = self._class(name, ism)
            row.indices = indices.get(name, [])
            classes.append(row)
        holds_index = f"{self.prefix}-holds"
        holds: list[dict[str, Any]] | None = None
        if self.q.exists(holds_index):
            found = self.q.search(holds_index, {"size": 1000, "query": {"match_all": {}}})
            holds = [{"_id": h["_id"], **h["_source"]} for h in found["hits"]["hits"]]
        return Retention(
            ism,
            self.minimum_days,
            classes,
            holds_index,
            holds,
            job_last_run=self.job_last_run,
            deletions=self._deletions(),
            record_problems=list(self.records.problems) if self.records is not None else [],
        )

    def _class(self, name: str, ism: bool) -> ClassRetention:
        body: dict[str, Any] | None = None
        source = ""
        managed = None
        if ism:
            body = self._ism_policy(name)
            if body is not None:
                source = f"ISM policy {policy_id(self.prefix, name)}"
                managed = self._managed(name)
        if body is None and name in self.policy_files:
            filename, body = self.policy_files[name]
            source = f"policy file {filename}"
        if body is None:
            return ClassRetention(
                name, "", "no policy: indices kept until deleted by an operator", None, False
            )
        deletes, days = policy_retention(body)
        by_ism = ism and source.startswith("ISM")
        by_job = not ism and bool(self.job_last_run)
        enforced = by_ism or by_job
        if by_ism:
            enforcement = ENFORCED
        elif by_job:
            enforcement = f"{BY_COLLECTOR} (last run {self.job_last_run[:19]}Z)"
        elif ism:
            enforcement = "ISM installed, policy not installed: not enforced"
        else:
            enforcement = NOT_ENFORCED
        row = ClassRetention(name, source, enforcement, days, deletes, managed=managed)
        meets = not deletes or (days is not None and days >= self.minimum_days)
        row.verdict = (MEETS if enforced else UNENFORCED) if meets else FAILS
        return row
