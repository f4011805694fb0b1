"""The agent's metrics as Prometheus samples (prometheus-client), built at scrape time.

Imported only by an agent that serves its metrics (`metrics.listen`): prometheus-client
loads its HTTP, WSGI and e-mail modules (~12 MiB of RSS) that an agent without the
endpoint never needs. Counters come from agent.metrics' own counters; the state gauges
from the snapshot function the runtime supplies.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.metrics import CONNECTION_STATES, NAMESPACE, AgentMetrics, AgentState

__all__ = ["CONTENT_TYPE_LATEST", "generate_latest", "registry"]


def registry(metrics: AgentMetrics) -> CollectorRegistry:
    """A registry of its own (never the global one) exporting `metrics`."""
    reg = CollectorRegistry()
    reg.register(_CounterCollector(metrics))
    reg.register(_StateCollector(metrics))
    return reg


class _CounterCollector(Collector):
    def __init__(self, metrics: AgentMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        for counter in self._metrics.counters:
            family = CounterMetricFamily(
                counter.name, counter.documentation, labels=list(counter.labelnames)
            )
            for labels, series in counter.series():
                family.add_metric(list(labels), series.value, created=series.created)
            yield family


class _StateCollector(Collector):
    def __init__(self, metrics: AgentMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are only known at scrape time

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        snapshot = m.snapshot
        state = snapshot() if snapshot is not None else None
        if state is not None:
            yield from _state_families(state)
        last = m.last_ack_unix
        if last is not None:
            yield _gauge("last_ack_timestamp_seconds", "Unix time of the last ack", last)
            age = max(0.0, m.wall() - last)
            yield _gauge("last_ack_age_seconds", "Seconds since the last ack", age)


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{NAMESPACE}_{name}", text, value=value)


def _state_families(state: AgentState) -> Iterator[Metric]:
    yield _gauge("spool_bytes", "Bytes in the spool's segment files", state.spool_bytes)
    yield _gauge("spool_segments", "Spool segment files", state.spool_segments)
    unacked = max(0, state.next_sequence - 1 - state.acked_sequence)
    yield _gauge("spool_unacked_events", "Events spooled, not yet acknowledged", unacked)
    yield _gauge("next_sequence", "Sequence the next event gets", state.next_sequence)
    yield _gauge("acked_sequence", "Last acknowledged sequence", state.acked_sequence)
    yield _gauge("batches_in_flight", "Batches not yet acknowledged", state.batches_in_flight)
    yield _gauge(
        "state_disk_full",
        "1 while the state directory's filesystem is full (paused: state disk full)",
        1.0 if state.state_disk_full else 0.0,
    )
    files = GaugeMetricFamily(
        f"{NAMESPACE}_files_watched", "Files tailed, by source", labels=["source"]
    )
    for source, count in sorted(state.files_watched.items()):
        files.add_metric([source], count)
    yield files
    conn = GaugeMetricFamily(
        f"{NAMESPACE}_collector_connection_state",
        "1 for the current connection state of each collector endpoint",
        labels=["endpoint", "state"],
    )
    for endpoint, current in state.connections.items():
        for name in CONNECTION_STATES:
            conn.add_metric([endpoint, name], 1.0 if name == current else 0.0)
    yield conn
