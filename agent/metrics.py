"""The agent's Prometheus metrics (prometheus-client, a dedicated registry per agent) and
the optional plain-HTTP endpoint serving them (`metrics.listen`, off by default).

Names (all prefixed ``crm_audit_agent_``):

    lines_read_total{source}            lines read from log files
    events_spooled_total{source}        events written to the spool (source "" = agent notices)
    parse_errors_total{source}          records shipped with the flag parse_error
    events_sent_total                   events sent to a collector (resends included)
    events_acked_total                  events acknowledged by a collector
    batches_acked_total                 batches acknowledged (heartbeats excluded)
    config_reloads_total{result}        SIGHUP reloads: applied | rejected
    spool_bytes                         bytes in the spool's segment files
    spool_segments                      segment files
    spool_unacked_events                events spooled and not yet acknowledged
    next_sequence                       sequence the next event gets
    acked_sequence                      last acknowledged sequence (0: none yet)
    files_watched{source}               files tailed (open, or closed while inactive)
    batches_in_flight                   batches submitted to the shipper, not yet acked
    last_ack_timestamp_seconds          Unix time of the last ack (absent before the first)
    last_ack_age_seconds                seconds since the last ack (absent before the first)
    collector_connection_state{endpoint,state}   1 for each endpoint's current state
                                        (idle | connecting | connected | failing)

Counters are updated where things happen; the state gauges are computed at scrape
time from a snapshot function the runtime supplies, so a scrape never blocks the
read or ship threads for long. The endpoint shows nothing secret (source names,
collector addresses) but has no authentication: bind it to loopback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proto.httpendpoint import HttpEndpoint

log = logging.getLogger(__name__)

NAMESPACE = "crm_audit_agent"
CONNECTION_STATES = ("idle", "connecting", "connected", "failing")


@dataclass(frozen=True)
class AgentState:
    """What the state gauges show, taken at scrape time."""

    spool_bytes: int
    spool_segments: int
    next_sequence: int
    acked_sequence: int
    batches_in_flight: int
    files_watched: Mapping[str, int] = field(default_factory=dict)
    connections: Mapping[str, str] = field(default_factory=dict)
    state_disk_full: bool = False  # agent.statedisk.disk_full


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


class AgentMetrics:
    """Every metric of one agent, in its own registry (never the global one)."""

    def __init__(self, *, wall: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self.wall = wall
        self.snapshot: Callable[[], AgentState] | None = None
        self.last_ack_unix: float | None = None
        reg, ns = self.registry, NAMESPACE
        self.lines_read = Counter(
            "lines_read", "Lines read from log files", ["source"], namespace=ns, registry=reg
        )
        self.events_spooled = Counter(
            "events_spooled", "Events written to the spool", ["source"], namespace=ns, registry=reg
        )
        self.parse_errors = Counter(
            "parse_errors",
            "Records shipped with the parse_error flag",
            ["source"],
            namespace=ns,
            registry=reg,
        )
        self.events_sent = Counter(
            "events_sent", "Events sent (resends included)", namespace=ns, registry=reg
        )
        self.events_acked = Counter(
            "events_acked", "Events acknowledged by a collector", namespace=ns, registry=reg
        )
        self.batches_acked = Counter(
            "batches_acked", "Batches acknowledged by a collector", namespace=ns, registry=reg
        )
        self.config_reloads = Counter(
            "config_reloads", "SIGHUP config reloads", ["result"], namespace=ns, registry=reg
        )
        reg.register(_StateCollector(self))

    def acked(self, events: int) -> None:
        self.events_acked.inc(events)
        self.batches_acked.inc()
        self.last_ack_unix = self.wall()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer(HttpEndpoint):
    """Serves GET /metrics (Prometheus text format) on `listen` in a daemon thread."""

    def __init__(self, listen: str, metrics: AgentMetrics) -> None:
        super().__init__(
            listen,
            {"/metrics": lambda: (200, metrics.exposition(), CONTENT_TYPE_LATEST)},
            "agent-metrics",
        )

    def start(self) -> int:
        """Bind and serve; OSError when the address cannot be bound."""
        port = super().start()
        log.info("metrics on http://%s:%d/metrics", self.host, port)
        return port
