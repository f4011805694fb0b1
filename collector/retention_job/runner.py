"""The retention job inside the collector, and the job a config describes.

`build_job` is what ``crm-audit-collector run`` (through `RetentionRunner`) and the
``retention status|run`` commands use: the classes' policy files, the collector key for
the records (when checkpoints are on), the enforcer and lease of ``retention``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from collector.checkpoints import load_or_create_key
from collector.config import CollectorConfig
from collector.errors import RetentionError, StartupError
from collector.index import Requester
from collector.retention_job.job import (
    ClassPolicy,
    RetentionJob,
    RetentionObserver,
    RunReport,
)
from collector.retention_job.records import RecordFile

log = logging.getLogger(__name__)


def class_policies(config: CollectorConfig) -> dict[str, ClassPolicy]:
    return {
        name: ClassPolicy.from_config(name, cls) for name, cls in config.retention.classes.items()
    }


class RetentionRunner:
    """Background thread in the collector: a run now, then every ``interval_s``."""

    def __init__(self, job: RetentionJob, *, interval_s: float, dry_run: bool) -> None:
        self.job = job
        self.interval_s = interval_s
        self.dry_run = dry_run
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> RunReport | None:
        try:
            report = self.job.run(dry_run=self.dry_run)
        except RetentionError as exc:
            log.error("retention run failed (retried in %.0f s): %s", self.interval_s, exc)
            return None
        except Exception:  # a retention bug must not take the collector's ingest down
            log.exception("retention run failed (retried in %.0f s)", self.interval_s)
            return None
        if report.skipped:
            log.info("retention: %s", report.skipped)
        for line in report.kept:
            log.info("retention: %s", line)
        for line in report.errors:
            log.error("retention: %s", line)
        if self.dry_run:
            for line in report.actions:
                log.info("retention (dry run): %s", line)
        return report

    def start(self) -> None:
        if self.job.configured_enforcer == "off":
            # Another process runs the job under a role that may delete (a timer).
            log.info("retention.enforcer is off: this collector does not run the retention job")
            return
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # The first run after one interval, not at start: a collector restarted into a
        # backlog indexes it before the job may close a month for writing.
        while not self._stop.wait(self.interval_s):
            self.run_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def collector_id(kind: str = "collector") -> str:
    """Who runs the job, as the lease and the records name it."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}"


def build_job(
    config: CollectorConfig,
    request: Requester,
    *,
    clock_ns: Callable[[], int],
    observer: RetentionObserver | None = None,
    holder: str | None = None,
) -> RetentionJob:
    """The job `config` describes; records signed with the collector's checkpoint key
    (created 0600 when absent, as the collector does) when checkpoints are on."""
    records: RecordFile | None = None
    key_path = config.integrity.checkpoint_key()
    if config.integrity.checkpoint_dir is not None and key_path is not None:
        try:
            key = load_or_create_key(key_path)
        except StartupError as exc:
            raise RetentionError(str(exc)) from None
        records = RecordFile(config.integrity.checkpoint_dir, key)
    return RetentionJob(
        request,
        prefix=config.opensearch.index_prefix,
        classes=class_policies(config),
        holder=holder or collector_id(),
        clock_ns=clock_ns,
        records=records,
        enforcer=config.retention.enforcer,
        lease_ttl_s=config.retention.lease_ttl_s,
        observer=observer,
        replicas=config.opensearch.replicas,
    )
