"""The collector's Prometheus metrics (prometheus-client, one registry per server).

Names (all prefixed ``crm_audit_collector_``):

    batches_total{status}              batches answered, by Ack status (ok|retry|rejected)
    events_received_total              events in batches received
    events_indexed_total               events OpenSearch created (201)
    events_duplicate_total             events already there (409: delivered before)
    events_dead_lettered_total         events refused by the mapping, kept in the DLQ
    bulk_retried_documents_total       documents re-sent after 429/5xx/no answer
    bulk_requests_total{status}        _bulk requests by HTTP status (0: no answer)
    bulk_latency_seconds               histogram of _bulk round trips
    bulk_documents                     histogram of documents per _bulk request (the
                                       writes of several batches share one: group commit)
    bulk_in_flight                     _bulk requests in flight now
    batches_in_flight                  batches being processed now
    streams_open                       agent streams open now
    streams_refused_total{reason}      streams refused (per_agent_limit)
    agent_last_seen_timestamp_seconds{agent}   last batch from each agent (Unix time)
    ready                              1 once templates/policies are installed
    retention_indices_deleted_total{class}     events indices the retention job deleted
    retention_indices_read_only_total{class}   events indices it made read-only (warm)
    retention_oldest_event_age_seconds{class}  age of the oldest stored event per class
                                               (set on every retention run or status)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collector.index import IndexResult

NAMESPACE = "crm_audit_collector"

# Bulk round trips: a few ms on an idle node up to request_timeout_s under load.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Documents per _bulk: a lone seal (1) up to the default bulk_max_docs (2000) and beyond.
_DOCUMENT_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10_000, 100_000)


class CollectorMetrics:
    """All metrics of one collector; implements `collector.index.IndexObserver`."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clock = clock
        reg = self.registry
        ns = NAMESPACE
        self.batches = Counter(
            "batches", "Batches answered, by Ack status", ["status"], namespace=ns, registry=reg
        )
        self.events_received = Counter(
            "events_received", "Events in received batches", namespace=ns, registry=reg
        )
        self.events_indexed = Counter(
            "events_indexed", "Events created in OpenSearch", namespace=ns, registry=reg
        )
        self.events_duplicate = Counter(
            "events_duplicate",
            "Events already present (409, delivered before)",
            namespace=ns,
            registry=reg,
        )
        self.events_dead_lettered = Counter(
            "events_dead_lettered",
            "Events refused by the mapping and written to the dead-letter index",
            namespace=ns,
            registry=reg,
        )
        self.bulk_retried = Counter(
            "bulk_retried_documents",
            "Documents re-sent after 429, 5xx or no answer",
            namespace=ns,
            registry=reg,
        )
        self.bulk_requests = Counter(
            "bulk_requests",
            "_bulk requests by HTTP status (0: no answer)",
            ["status"],
            namespace=ns,
            registry=reg,
        )
        self.bulk_latency = Histogram(
            "bulk_latency_seconds",
            "_bulk request round-trip time",
            namespace=ns,
            registry=reg,
            buckets=_LATENCY_BUCKETS,
        )
        self.bulk_documents = Histogram(
            "bulk_documents",
            "Documents per _bulk request (writes of several batches merged)",
            namespace=ns,
            registry=reg,
            buckets=_DOCUMENT_BUCKETS,
        )
        self.bulk_in_flight_gauge = Gauge(
            "bulk_in_flight", "_bulk requests in flight", namespace=ns, registry=reg
        )
        self.batches_in_flight = Gauge(
            "batches_in_flight", "Batches being processed", namespace=ns, registry=reg
        )
        self.streams_open = Gauge("streams_open", "Open agent streams", namespace=ns, registry=reg)
        self.streams_refused = Counter(
            "streams_refused", "Agent streams refused", ["reason"], namespace=ns, registry=reg
        )
        self.agent_last_seen = Gauge(
            "agent_last_seen_timestamp_seconds",
            "Unix time of the last batch received from each agent",
            ["agent"],
            namespace=ns,
            registry=reg,
        )
        self.ready = Gauge(
            "ready", "1 once templates and policies are installed", namespace=ns, registry=reg
        )

        self.retention_deleted_total = Counter(
            "retention_indices_deleted",
            "Events indices deleted by the collector's retention job, by class",
            ["class"],
            namespace=ns,
            registry=reg,
        )
        self.retention_read_only_total = Counter(
            "retention_indices_read_only",
            "Events indices made read-only and force-merged by the retention job, by class",
            ["class"],
            namespace=ns,
            registry=reg,
        )
        self.retention_oldest_event_age = Gauge(
            "retention_oldest_event_age_seconds",
            "Age of the oldest stored event per retention class (event time)",
            ["class"],
            namespace=ns,
            registry=reg,
        )

    # -- collector.retention_job.job.RetentionObserver --------------------------------

    def retention_deleted(self, retention_class: str) -> None:
        self.retention_deleted_total.labels(retention_class).inc()

    def retention_read_only(self, retention_class: str) -> None:
        self.retention_read_only_total.labels(retention_class).inc()

    def retention_oldest_event(self, retention_class: str, age_s: float | None) -> None:
        if age_s is None:  # no event stored in the class: no age rather than 0
            with contextlib.suppress(KeyError):
                self.retention_oldest_event_age.remove(retention_class)
            return
        self.retention_oldest_event_age.labels(retention_class).set(age_s)

    # -- collector.index.IndexObserver ---------------------------------------------

    def bulk_done(self, seconds: float, docs: int, status: int) -> None:
        self.bulk_latency.observe(seconds)
        self.bulk_documents.observe(docs)
        self.bulk_requests.labels(status=str(status)).inc()

    def retried(self, docs: int) -> None:
        self.bulk_retried.inc(docs)

    def bulk_in_flight(self, delta: int) -> None:
        self.bulk_in_flight_gauge.inc(delta)

    # -- batches ---------------------------------------------------------------------

    def batch_received(self, agent_id: str, events: int) -> None:
        self.events_received.inc(events)
        self.agent_last_seen.labels(agent=agent_id).set(self.clock())

    def batch_answered(self, status: str, result: IndexResult | None = None) -> None:
        self.batches.labels(status=status).inc()
        if result is None:
            return
        # BulkIndexer counts a dead letter's own write in indexed (201) or duplicates (409).
        dl_new = result.dead_lettered - result.dead_letter_duplicates
        self.events_indexed.inc(result.indexed - dl_new)
        self.events_duplicate.inc(result.duplicates - result.dead_letter_duplicates)
        self.events_dead_lettered.inc(result.dead_lettered)
