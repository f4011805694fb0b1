"""The collector's retention job: each class's phases applied by event time.

Per class (``retention.classes``) the phases come from the class's policy file
(`collector.retention_job.policy`). For every open events index of the class the job
reads the event time of its newest document (a max aggregation on ``@timestamp``, never
the creation date) and

- once that is older than the warm age: sets ``index.blocks.write`` (what ISM's
  ``read_only`` action sets) and force-merges the index. The block is added with the
  add-index-block API (``PUT <index>/_block/write``), not a settings update: a role
  granted ``indices:admin/block/add`` can close an index for writes but cannot lift
  ``index.blocks.read_only``, the legal hold (config/opensearch/security/roles.yml);
- once it is older than the delete age and the class's ``minimum_days``: writes the
  signed retention record (`collector.retention_job.records`: file first, then
  ``{prefix}-retention``) and only then deletes the index.

It never deletes, and leaves as it is, an index under legal hold: one with
``index.blocks.read_only`` set (what `collector.hold` sets; OpenSearch itself refuses
to delete it) or named by an active hold in ``{prefix}-holds``. A released index is
deleted on the next run once it is due. Without the collector key (no
``integrity.checkpoint_dir``) nothing is deleted: there would be no signed evidence.

One collector runs it at a time: the lease ``retention`` in ``{prefix}-leases``
(`collector.detect.lease`), taken for the run, renewed after every index and released
after it. Runs are idempotent: an index already deleted is not seen again, and a
record already indexed for an index (``_id`` ``<index>:<uuid>``, e.g. a run that
stopped between record and delete) is not written twice.

With the ISM enforcer (the cluster has the plugin) the job changes no index: it only
records the deletions ISM made (`collector.retention_job.ism`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.config import RetentionClass
from collector.detect.errors import DetectionError
from collector.detect.lease import Lease, Leases
from collector.documents import iso_nanos
from collector.errors import HoldError, LifecycleError, RetentionError
from collector.hold import HoldManager
from collector.index import Requester
from collector.lifecycle import events_index_pattern, ism_on_every_node, replica_settings
from collector.retention_job.evidence import (
    EventTimes,
    event_times,
    fail,
    gather,
    record_chains,
)
from collector.retention_job.policy import DAY_NS, Phases, phases_of
from collector.retention_job.records import (
    RETENTION_MAPPING,
    RecordFile,
    index_document,
    record_id,
    retention_index,
)

log = logging.getLogger(__name__)

LEASE_NAME = "retention"
COLLECTOR = "collector"
ISM = "ism"
OFF = "off"  # this process does not run the job (another one, with its own role, does)
WARM = "read-only + force-merge"
DELETE = "delete"


class RetentionObserver(Protocol):
    """What the job reports to metrics (`collector.metrics.CollectorMetrics`)."""

    def retention_deleted(self, retention_class: str) -> None: ...

    def retention_read_only(self, retention_class: str) -> None: ...

    def retention_oldest_event(self, retention_class: str, age_s: float | None) -> None: ...


@dataclass(frozen=True)
class ClassPolicy:
    """A retention class as the job applies it."""

    name: str
    phases: Phases
    minimum_days: float | None
    source: str  # the policy file's name
    sha256: str  # of the policy file's bytes

    @classmethod
    def from_config(cls, name: str, config: RetentionClass) -> ClassPolicy:
        data = config.policy.read_bytes()
        return cls(
            name,
            phases_of(json.loads(data)),
            config.minimum_days,
            config.policy.name,
            hashlib.sha256(data).hexdigest(),
        )

    def delete_after_days(self) -> float | None:
        if self.phases.delete_days is None:
            return None
        return max(self.phases.delete_days, self.minimum_days or 0.0)

    def rule(self) -> str:
        minimum = f"; regulatory minimum {self.minimum_days:g}d" if self.minimum_days else ""
        return f"{self.phases.describe()}, by the event time of the newest document{minimum}"


@dataclass
class IndexStatus:
    """One events index: its event times, phase, holds and what comes next."""

    name: str
    retention_class: str
    uuid: str
    documents: int
    oldest_ns: int | None
    newest_ns: int | None
    write_blocked: bool
    holds: list[str] = field(default_factory=list)
    next_action: str = ""  # WARM, DELETE or "" (nothing planned)
    next_at_ns: int | None = None
    due: bool = False
    blocked: str = ""  # why a due action is not taken

    @property
    def phase(self) -> str:
        if self.holds:
            return "held"
        return "warm" if self.write_blocked else "hot"


@dataclass
class ClassStatus:
    policy: ClassPolicy
    indices: list[IndexStatus] = field(default_factory=list)

    @property
    def oldest_ns(self) -> int | None:
        found = [i.oldest_ns for i in self.indices if i.oldest_ns is not None]
        return min(found) if found else None


@dataclass
class RunReport:
    """What one run did (or, dry, would do)."""

    enforcer: str
    dry_run: bool
    skipped: str = ""  # why nothing ran (the lease is another collector's)
    actions: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    read_only: list[str] = field(default_factory=list)


_BLOCK_TRUE = ("true", True)


def _index_re(prefix: str, retention_class: str) -> re.Pattern[str]:
    return re.compile(
        rf"^{re.escape(prefix)}-events-{re.escape(retention_class)}-\d{{4}}\.\d{{2}}(\.\d{{2}})?$"
    )


class RetentionJob:
    """Plans and applies retention for every class (see the module docstring)."""

    def __init__(
        self,
        request: Requester,
        *,
        prefix: str,
        classes: Mapping[str, ClassPolicy],
        holder: str,
        clock_ns: Callable[[], int],
        records: RecordFile | None,
        enforcer: str = "auto",
        lease_ttl_s: float = 900,
        observer: RetentionObserver | None = None,
        replicas: int | str = "0-1",
    ) -> None:
        self.request = request
        self.prefix = prefix
        self.classes = dict(classes)
        self.holder = holder
        self.clock_ns = clock_ns
        self.records = records
        self.configured_enforcer = enforcer
        self.observer = observer
        self.replicas = replicas
        self.leases = Leases(request, prefix, holder, lease_ttl_s, replicas=replicas)
        self.holds = HoldManager(
            request, prefix=prefix, classes=sorted(classes), clock_ns=clock_ns, replicas=replicas
        )

    # -- which enforcer ---------------------------------------------------------------

    def enforcer(self) -> str:
        """``collector`` or ``ism`` (``auto``: ism where every node has the plugin)."""
        if self.configured_enforcer != "auto":
            return self.configured_enforcer
        return ISM if self._ism_present() else COLLECTOR

    def _ism_present(self) -> bool:
        try:
            return ism_on_every_node(self.request)
        except LifecycleError as exc:
            raise RetentionError(str(exc)) from None

    # -- status -------------------------------------------------------------------------

    def status(self) -> list[ClassStatus]:
        """Every class with its open indices, phases and next actions."""
        now = self.clock_ns()
        held = self._held_indices()
        out: list[ClassStatus] = []
        for name, policy in sorted(self.classes.items()):
            row = ClassStatus(policy)
            pattern = events_index_pattern(self.prefix, name)
            settings = self._settings(pattern)
            times = event_times(self.request, pattern)
            matcher = _index_re(self.prefix, name)
            for index in sorted(settings):
                if not matcher.match(index):
                    continue
                flat = settings[index]
                found = times.get(index, EventTimes(0, None, None))
                status = IndexStatus(
                    name=index,
                    retention_class=name,
                    uuid=str(flat.get("index.uuid", "")),
                    documents=found.documents,
                    oldest_ns=found.oldest_ns,
                    newest_ns=found.newest_ns,
                    write_blocked=flat.get("index.blocks.write") in _BLOCK_TRUE,
                )
                if flat.get("index.blocks.read_only") in _BLOCK_TRUE:
                    status.holds.append("index.blocks.read_only")
                status.holds.extend(held.get(index, []))
                self._plan(policy, status, now)
                row.indices.append(status)
            if self.observer is not None:
                oldest = row.oldest_ns
                self.observer.retention_oldest_event(
                    name, None if oldest is None else max(0.0, (now - oldest) / 1e9)
                )
            out.append(row)
        return out

    def _plan(self, policy: ClassPolicy, status: IndexStatus, now: int) -> None:
        if status.newest_ns is None:
            status.blocked = "no documents: no event time to age by"
            return
        delete_days = policy.delete_after_days()
        warm_days = policy.phases.warm_days
        if (
            warm_days is not None
            and not status.write_blocked
            and (delete_days is None or warm_days < delete_days)
        ):
            status.next_action = WARM
            status.next_at_ns = status.newest_ns + int(warm_days * DAY_NS)
        elif delete_days is not None:
            status.next_action = DELETE
            status.next_at_ns = status.newest_ns + int(delete_days * DAY_NS)
        if status.next_at_ns is None or status.next_at_ns > now:
            return
        # Overdue for both (e.g. the job was off): deletion is what is due.
        overdue = delete_days is not None and status.newest_ns + int(delete_days * DAY_NS) <= now
        if status.next_action == WARM and overdue and delete_days is not None:
            status.next_action = DELETE
            status.next_at_ns = status.newest_ns + int(delete_days * DAY_NS)
        status.due = True
        if status.holds:
            status.blocked = "legal hold: " + ", ".join(status.holds)
        elif status.next_action == DELETE and self.records is None:
            status.blocked = (
                "no collector key (integrity.checkpoint_dir unset): no signed evidence, no deletion"
            )

    def _settings(self, pattern: str) -> dict[str, dict[str, Any]]:
        response = self.request(
            "GET",
            f"/{pattern}/_settings",
            params={"flat_settings": "true", "expand_wildcards": "open"},
        )
        if response.status == 404:
            return {}
        if response.status != 200 or not isinstance(response.body, Mapping):
            raise fail(f"cannot read the settings of {pattern}", response)
        return {
            str(index): dict(body.get("settings", {}))
            for index, body in response.body.items()
            if isinstance(body, Mapping)
        }

    def _held_indices(self) -> dict[str, list[str]]:
        try:
            holds = self.holds.holds()
        except HoldError as exc:
            raise RetentionError(str(exc)) from None
        out: dict[str, list[str]] = {}
        for hold in holds:
            if hold.status == "active":
                for index in hold.indices:
                    out.setdefault(index, []).append(f"hold {hold.id}")
        return out

    # -- run ----------------------------------------------------------------------------

    def run(self, *, dry_run: bool = False) -> RunReport:
        """One run under the lease; the report says what was done (or would be)."""
        enforcer = self.enforcer()
        report = RunReport(enforcer, dry_run)
        if enforcer == OFF:
            report.skipped = "retention.enforcer is off: this process does not run the job"
            return report
        lease = self._acquire(report) if not dry_run else None
        if not dry_run and lease is None:
            return report
        try:
            if enforcer == ISM:
                from collector.retention_job.ism import IsmDeletions

                if self.configured_enforcer == ISM and not self._ism_present():
                    report.errors.append(
                        "retention.enforcer is ism but the cluster has no ISM plugin: "
                        "nothing enforces retention (use auto or collector)"
                    )
                    return report

                IsmDeletions(self).record(report, dry_run=dry_run)
                return report
            for row in self.status():
                for status in row.indices:
                    if not status.due:
                        continue
                    if status.blocked:
                        report.kept.append(
                            f"{status.name}: {status.next_action} due, kept: {status.blocked}"
                        )
                        continue
                    self._apply(row.policy, status, report, dry_run=dry_run)
                    if lease is not None:
                        lease = self._renew(lease, report)
                        if lease is None:
                            return report
        finally:
            if lease is not None:
                self._release(lease)
        return report

    def _apply(
        self, policy: ClassPolicy, status: IndexStatus, report: RunReport, *, dry_run: bool
    ) -> None:
        action = f"{status.name}: {status.next_action} ({policy.name}, newest event " + (
            f"{iso_nanos(status.newest_ns or 0)})"
        )
        if dry_run:
            report.actions.append(f"would {action}")
            return
        try:
            if status.next_action == WARM:
                self.make_read_only(status.name, policy.phases.force_merge_segments)
                report.read_only.append(status.name)
                if self.observer is not None:
                    self.observer.retention_read_only(policy.name)
            else:
                if not self.delete_with_record(policy, status):
                    report.kept.append(
                        f"{status.name}: not deleted (held, or a newer event, meanwhile)"
                    )
                    return
                report.deleted.append(status.name)
                if self.observer is not None:
                    self.observer.retention_deleted(policy.name)
        except (RetentionError, OSError) as exc:
            report.errors.append(f"{status.name}: {exc}")
            return
        report.actions.append(action)
        log.info("retention: %s", action)

    def make_read_only(self, index: str, segments: int) -> None:
        blocked = self.request("PUT", f"/{index}/_block/write")
        if blocked.status != 200:
            raise fail(f"cannot make {index} read-only", blocked)
        merged = self.request(
            "POST", f"/{index}/_forcemerge", params={"max_num_segments": str(segments)}
        )
        if merged.status != 200:
            raise fail(f"cannot force-merge {index}", merged)

    def delete_with_record(self, policy: ClassPolicy, status: IndexStatus) -> bool:
        """Record (file, then index), then delete; False when OpenSearch refused the
        delete because of a block (a hold placed after the status was read)."""
        if self.records is None:  # _plan keeps these; a second guard costs nothing
            raise RetentionError("no collector key: no signed evidence, no deletion")
        self.ensure_index()
        doc_id = record_id(status.name, status.uuid)
        path = f"/{retention_index(self.prefix)}/_doc/{doc_id}"
        existing = self.request("GET", path)
        if existing.status == 404:
            # Writes stop first: the record then lists exactly what the delete removes (a
            # late event for this month is dead-lettered, with its original, not lost).
            if not status.write_blocked:
                blocked = self.request("PUT", f"/{status.name}/_block/write")
                if blocked.status == 403 and "cluster_block_exception" in json.dumps(blocked.body):
                    log.warning("retention: %s is blocked (legal hold?): kept", status.name)
                    return False
                if blocked.status != 200:
                    raise fail(f"cannot stop writes to {status.name}", blocked)
                refreshed = self.request("POST", f"/{status.name}/_refresh")
                if refreshed.status != 200:
                    raise fail(f"cannot refresh {status.name}", refreshed)
            times = event_times(self.request, status.name).get(status.name)
            if times is not None:
                status.documents = times.documents
                status.oldest_ns, status.newest_ns = times.oldest_ns, times.newest_ns
            after = policy.delete_after_days()
            if status.newest_ns is not None and (
                after is None or status.newest_ns + int(after * DAY_NS) > self.clock_ns()
            ):
                log.warning("retention: %s got a newer event meanwhile: not deleted", status.name)
                return False
            record = self.build_record(policy, status, COLLECTOR)
            line = self.records.append(record, now_unix_nano=self.clock_ns())
            self.index_record(doc_id, line)
        elif existing.status != 200:
            raise fail(f"cannot look up the retention record {doc_id}", existing)
        deleted = self.request("DELETE", f"/{status.name}")
        if deleted.status == 403 and "cluster_block_exception" in json.dumps(deleted.body):
            log.warning("retention: %s is blocked (legal hold?): not deleted", status.name)
            return False
        if deleted.status not in (200, 404):
            raise fail(f"cannot delete {status.name}", deleted)
        return True

    def build_record(
        self, policy: ClassPolicy, status: IndexStatus, enforcer: str, **extra: Any
    ) -> dict[str, Any]:
        chains = gather(self.request, self.prefix, status.name)
        return {
            "action": "delete",
            "class": policy.name,
            "index": status.name,
            "index_uuid": status.uuid,
            "events": {
                "count": status.documents,
                "oldest": iso_nanos(status.oldest_ns) if status.oldest_ns is not None else "",
                "newest": iso_nanos(status.newest_ns) if status.newest_ns is not None else "",
            },
            **record_chains({chain: entry.to_json() for chain, entry in chains.items()}),
            "policy": {
                "source": policy.source,
                "sha256": policy.sha256,
                "phases": policy.phases.describe(),
                "minimum_days": policy.minimum_days,
                "rule": policy.rule(),
            },
            "deleted_by": {"enforcer": enforcer, "collector": self.holder, **extra},
        }

    def index_record(self, doc_id: str, line: str) -> None:
        created = self.request(
            "PUT",
            f"/{retention_index(self.prefix)}/_create/{doc_id}",
            body=index_document(line),
            params={"refresh": "true"},
        )
        # 409: the same index's record is there already (written by an earlier try)
        if created.status not in (200, 201, 409):
            raise fail(f"cannot index the retention record {doc_id}", created)

    def ensure_index(self) -> None:
        index = retention_index(self.prefix)
        response = self.request(
            "PUT",
            f"/{index}",
            body={
                "settings": {"index": {"number_of_shards": 1, **replica_settings(self.replicas)}},
                "mappings": RETENTION_MAPPING,
            },
        )
        if response.status == 200:
            return
        if response.status == 400 and "resource_already_exists_exception" in json.dumps(
            response.body
        ):
            return
        raise fail(f"cannot create {index}", response)

    # -- lease --------------------------------------------------------------------------

    def _acquire(self, report: RunReport) -> Lease | None:
        try:
            self.leases.ensure_index()
            lease = self.leases.acquire(LEASE_NAME, self.clock_ns())
        except DetectionError as exc:
            raise RetentionError(f"retention lease: {exc}") from None
        if lease is None:
            report.skipped = "another collector holds the retention lease (it runs the job)"
        return lease

    def _renew(self, lease: Lease, report: RunReport) -> Lease | None:
        try:
            renewed = self.leases.complete(lease, self.clock_ns(), self.clock_ns())
        except DetectionError as exc:
            raise RetentionError(f"retention lease: {exc}") from None
        if renewed is None:
            report.skipped = "lost the retention lease to another collector mid-run"
        return renewed

    def _release(self, lease: Lease) -> None:
        try:
            self.leases.release(lease, self.clock_ns())
        except DetectionError as exc:
            log.warning("retention lease not released (it expires): %s", exc)
