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

Each events index's batches index (``{prefix}-batches-<class>-<period>``,
`collector.batchbytes`: the raw bytes of its events, personal data) follows it: made
read-only with it, deleted right after it under the same decision, and named in its
retention record (``batches``: index, uuid, documents). An events index and its batches
index are held together: a hold on either keeps both. A batches index whose events index
is gone (deleted by hand, by ISM, or a run that stopped between the two deletes) is
deleted by its period: once the period's end is older than the class's delete age, with
a record of its own (``index`` the batches index, ``events_index`` the one it belonged to,
no chains: verify finds no runs in it).

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

import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from collector.batchbytes import batches_index, batches_index_pattern, events_index_of
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
from collector.retention_job.ism import period
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

    def rule(self, by: str = "the event time of the newest document") -> str:
        minimum = f"; regulatory minimum {self.minimum_days:g}d" if self.minimum_days else ""
        return f"{self.phases.describe()}, by {by}{minimum}"


@dataclass
class BatchesStatus:
    """A batches index: the raw bytes of one events index's events (`collector.batchbytes`).

    Beside its events index it shares that index's plan (`IndexStatus.batches`). Alone
    (``orphan``: its events index is gone) it has a plan of its own, by its period.
    """

    name: str
    uuid: str
    documents: int
    write_blocked: bool
    holds: list[str] = field(default_factory=list)
    orphan: bool = False
    delete_at_ns: int | None = None  # orphans: the period's end plus the delete age
    due: bool = False
    blocked: str = ""
    deleted: bool = False

    def to_record(self) -> dict[str, Any]:
        """What a retention record says of it."""
        return {"index": self.name, "index_uuid": self.uuid, "documents": self.documents}


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
    batches: BatchesStatus | None = None  # its batches index, when there is one

    @property
    def phase(self) -> str:
        if self.holds:
            return "held"
        return "warm" if self.write_blocked else "hot"


@dataclass
class ClassStatus:
    policy: ClassPolicy
    indices: list[IndexStatus] = field(default_factory=list)
    orphans: list[BatchesStatus] = field(default_factory=list)  # events index gone

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


def _index_re(prefix: str, retention_class: str, kind: str = "events") -> re.Pattern[str]:
    return re.compile(
        rf"^{re.escape(prefix)}-{kind}-{re.escape(retention_class)}-\d{{4}}\.\d{{2}}(\.\d{{2}})?$"
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
            batches = self._batches_of_class(name, held)
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
                status.batches = batches.pop(batches_index(self.prefix, index), None)
                if status.batches is not None:
                    # one pair, one decision: a hold on the bytes keeps the events too
                    status.holds.extend(h for h in status.batches.holds if h not in status.holds)
                self._plan(policy, status, now)
                row.indices.append(status)
            row.orphans = self._orphans(policy, batches, now)
            if self.observer is not None:
                oldest = row.oldest_ns
                self.observer.retention_oldest_event(
                    name, None if oldest is None else max(0.0, (now - oldest) / 1e9)
                )
            out.append(row)
        return out

    def _batches_of_class(
        self, retention_class: str, held: Mapping[str, list[str]]
    ) -> dict[str, BatchesStatus]:
        """The class's open batches indices, with their holds and document counts."""
        pattern = batches_index_pattern(self.prefix, retention_class)
        settings = self._settings(pattern)
        matcher = _index_re(self.prefix, retention_class, "batches")
        names = [index for index in sorted(settings) if matcher.match(index)]
        if not names:
            return {}
        times = event_times(self.request, pattern)
        out: dict[str, BatchesStatus] = {}
        for index in names:
            flat = settings[index]
            found = BatchesStatus(
                name=index,
                uuid=str(flat.get("index.uuid", "")),
                documents=times.get(index, EventTimes(0, None, None)).documents,
                write_blocked=flat.get("index.blocks.write") in _BLOCK_TRUE,
            )
            if flat.get("index.blocks.read_only") in _BLOCK_TRUE:
                found.holds.append(f"index.blocks.read_only on {index}")
            found.holds.extend(held.get(index, []))
            out[index] = found
        return out

    def _orphans(
        self, policy: ClassPolicy, unpaired: Mapping[str, BatchesStatus], now: int
    ) -> list[BatchesStatus]:
        """The batches indices left without an open events index whose events index does
        not exist at all (a closed one keeps its bytes: the job leaves it as it is)."""
        if not unpaired:
            return []
        existing = self._index_names(events_index_pattern(self.prefix, policy.name))
        out: list[BatchesStatus] = []
        for name, orphan in sorted(unpaired.items()):
            if events_index_of(self.prefix, name) in existing:
                continue
            orphan.orphan = True
            self._plan_orphan(policy, orphan, now)
            out.append(orphan)
        return out

    def _plan_orphan(self, policy: ClassPolicy, orphan: BatchesStatus, now: int) -> None:
        """By its period: no event documents are left to age it by, and every event whose
        bytes it holds has an event time inside that period."""
        after = policy.delete_after_days()
        span = period(orphan.name)
        if after is None or span is None:
            return
        orphan.delete_at_ns = span[1] + int(after * DAY_NS)
        if orphan.delete_at_ns > now:
            return
        orphan.due = True
        if orphan.holds:
            orphan.blocked = "legal hold: " + ", ".join(orphan.holds)
        elif self.records is None:
            orphan.blocked = (
                "no collector key (integrity.checkpoint_dir unset): no signed evidence, no deletion"
            )

    def _index_names(self, pattern: str) -> set[str]:
        """Every index of `pattern`, open or closed (by its settings: the retention role
        may read those, not the cluster state _cat/indices needs)."""
        return set(self._settings(pattern, expand="open,closed"))

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

    def _settings(self, pattern: str, expand: str = "open") -> dict[str, dict[str, Any]]:
        response = self.request(
            "GET",
            f"/{pattern}/_settings",
            params={"flat_settings": "true", "expand_wildcards": expand},
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
                # The events indices, then the batches indices whose events index is gone.
                steps: list[tuple[IndexStatus | BatchesStatus, str, Callable[[], None]]] = [
                    (
                        status,
                        f"{status.next_action} due",
                        functools.partial(self._apply, row.policy, status, report, dry_run=dry_run),
                    )
                    for status in row.indices
                ]
                steps += [
                    (
                        orphan,
                        "delete due (its events index is gone)",
                        functools.partial(
                            self._apply_orphan, row.policy, orphan, report, dry_run=dry_run
                        ),
                    )
                    for orphan in row.orphans
                ]
                for item, what, apply in steps:
                    if not item.due:
                        continue
                    if item.blocked:
                        report.kept.append(f"{item.name}: {what}, kept: {item.blocked}")
                        continue
                    apply()
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
        if status.batches is not None:
            action += f", with {status.batches.name}"
        if dry_run:
            report.actions.append(f"would {action}")
            return
        try:
            if status.next_action == WARM:
                self.make_read_only(status.name, policy.phases.force_merge_segments)
                report.read_only.append(status.name)
                if status.batches is not None and not status.batches.write_blocked:
                    self.make_read_only(status.batches.name, policy.phases.force_merge_segments)
                    report.read_only.append(status.batches.name)
                if self.observer is not None:
                    self.observer.retention_read_only(policy.name)
            else:
                if not self.delete_with_record(policy, status):
                    report.kept.append(
                        f"{status.name}: not deleted (held, or a newer event, meanwhile)"
                    )
                    return
                report.deleted.append(status.name)
                self._report_batches(status, report)
                if self.observer is not None:
                    self.observer.retention_deleted(policy.name)
        except (RetentionError, OSError) as exc:
            report.errors.append(f"{status.name}: {exc}")
            return
        report.actions.append(action)
        log.info("retention: %s", action)

    @staticmethod
    def _report_batches(status: IndexStatus, report: RunReport) -> None:
        batches = status.batches
        if batches is None:
            return
        if batches.deleted:
            report.deleted.append(batches.name)
        else:
            # held between its block and its delete: deleted by its period once released
            report.kept.append(f"{batches.name}: not deleted with {status.name} (held meanwhile)")

    def _apply_orphan(
        self, policy: ClassPolicy, orphan: BatchesStatus, report: RunReport, *, dry_run: bool
    ) -> None:
        action = (
            f"{orphan.name}: delete ({policy.name}, its events index is gone, period past "
            f"{iso_nanos(orphan.delete_at_ns or 0)})"
        )
        if dry_run:
            report.actions.append(f"would {action}")
            return
        try:
            if not self.delete_orphan_with_record(policy, orphan):
                report.kept.append(f"{orphan.name}: not deleted (held, or its events index back)")
                return
        except (RetentionError, OSError) as exc:
            report.errors.append(f"{orphan.name}: {exc}")
            return
        report.deleted.append(orphan.name)
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
            if not status.write_blocked and not self._stop_writes(status.name):
                return False
            # The batches index always: its block is also the last look for a hold
            # placed on it since the plan (a read-only index refuses a new block).
            if status.batches is not None and not self._stop_writes(status.batches.name):
                return False
            if status.batches is not None:
                counted = event_times(self.request, status.batches.name).get(status.batches.name)
                status.batches.documents = counted.documents if counted is not None else 0
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
        if not self._delete_index(status.name):
            return False
        # The events first: should this stop here, the bytes stay (an orphan, deleted by
        # its period), never events whose bytes are gone.
        if status.batches is not None:
            status.batches.deleted = self._delete_index(status.batches.name)
        return True

    def delete_orphan_with_record(self, policy: ClassPolicy, orphan: BatchesStatus) -> bool:
        """Record (file, then index), then delete a batches index whose events index is
        gone; False when it is held, or its events index came back meanwhile."""
        if self.records is None:
            raise RetentionError("no collector key: no signed evidence, no deletion")
        self.ensure_index()
        doc_id = record_id(orphan.name, orphan.uuid)
        existing = self.request("GET", f"/{retention_index(self.prefix)}/_doc/{doc_id}")
        if existing.status == 404:
            if not self._stop_writes(orphan.name):
                return False
            # a late event recreated its events index: the pair is planned as one again
            events = events_index_of(self.prefix, orphan.name)
            if events in self._index_names(events):
                log.warning("retention: %s has its events index again: kept", orphan.name)
                return False
            counted = event_times(self.request, orphan.name).get(orphan.name)
            orphan.documents = counted.documents if counted is not None else 0
            line = self.records.append(
                self.orphan_record(policy, orphan), now_unix_nano=self.clock_ns()
            )
            self.index_record(doc_id, line)
        elif existing.status != 200:
            raise fail(f"cannot look up the retention record {doc_id}", existing)
        orphan.deleted = self._delete_index(orphan.name)
        return orphan.deleted

    def _stop_writes(self, index: str) -> bool:
        """Block writes to `index` and refresh it; False when it is read-only (held)."""
        blocked = self.request("PUT", f"/{index}/_block/write")
        if blocked.status == 403 and "cluster_block_exception" in json.dumps(blocked.body):
            log.warning("retention: %s is blocked (legal hold?): kept", index)
            return False
        if blocked.status != 200:
            raise fail(f"cannot stop writes to {index}", blocked)
        refreshed = self.request("POST", f"/{index}/_refresh")
        if refreshed.status != 200:
            raise fail(f"cannot refresh {index}", refreshed)
        return True

    def _delete_index(self, index: str) -> bool:
        """Delete `index` (gone already counts); False when a block (hold) refuses it."""
        deleted = self.request("DELETE", f"/{index}")
        if deleted.status == 403 and "cluster_block_exception" in json.dumps(deleted.body):
            log.warning("retention: %s is blocked (legal hold?): not deleted", index)
            return False
        if deleted.status not in (200, 404):
            raise fail(f"cannot delete {index}", deleted)
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
            # deleted right after the index, under this record (verify reads no chains here)
            **({"batches": status.batches.to_record()} if status.batches is not None else {}),
            "policy": self._policy_record(policy, policy.rule()),
            "deleted_by": {"enforcer": enforcer, "collector": self.holder, **extra},
        }

    def orphan_record(self, policy: ClassPolicy, orphan: BatchesStatus) -> dict[str, Any]:
        """The record of a batches index deleted alone: no event documents and no chains
        (verify finds no runs in it); its event-time range is its period."""
        span = period(orphan.name)
        return {
            "action": "delete",
            "class": policy.name,
            "index": orphan.name,
            "index_uuid": orphan.uuid,
            "events_index": events_index_of(self.prefix, orphan.name),
            "events": {
                "count": None,
                "oldest": iso_nanos(span[0]) if span else "",
                "newest": iso_nanos(span[1] - 1) if span else "",
                "from": "index period (a batches index whose events index was gone)",
            },
            **record_chains({}),
            "batches": orphan.to_record(),
            "policy": self._policy_record(
                policy, policy.rule("the end of its period (its events index was gone)")
            ),
            "deleted_by": {"enforcer": COLLECTOR, "collector": self.holder},
        }

    @staticmethod
    def _policy_record(policy: ClassPolicy, rule: str) -> dict[str, Any]:
        return {
            "source": policy.source,
            "sha256": policy.sha256,
            "phases": policy.phases.describe(),
            "minimum_days": policy.minimum_days,
            "rule": rule,
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
