"""The agent's Prometheus metrics (counted here; exported through prometheus-client, a
dedicated registry per agent, by agent.metrics_export) and the optional plain-HTTP
endpoint serving them (`metrics.listen`, off by default).

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
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

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


class CounterValue:
    """One counter series (one set of label values)."""

    __slots__ = ("_lock", "created", "value")

    def __init__(self, created: float) -> None:
        self._lock = threading.Lock()
        self.created = created
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        with self._lock:
            self.value += amount


class Counter:
    """A counter counted here and turned into Prometheus samples only at scrape time:
    prometheus-client (with the HTTP and e-mail modules it loads, ~12 MiB) is imported
    only by an agent that serves `metrics.listen`. Same names, labels and samples
    (`_total`, `_created`) as a prometheus_client Counter."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name = f"{NAMESPACE}_{name}"
        self.documentation = documentation
        self.labelnames = labelnames
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], CounterValue] = {}
        if not labelnames:  # an unlabelled counter is exported from the start, as 0
            self._series[()] = CounterValue(time.time())

    def labels(self, **values: str) -> CounterValue:
        if set(values) != set(self.labelnames):
            raise ValueError(f"{self.name}: labels {sorted(values)} != {list(self.labelnames)}")
        key = tuple(str(values[name]) for name in self.labelnames)
        series = self._series.get(key)
        if series is None:
            with self._lock:
                series = self._series.setdefault(key, CounterValue(time.time()))
        return series

    def inc(self, amount: float = 1) -> None:
        self._series[()].inc(amount)

    def series(self) -> list[tuple[tuple[str, ...], CounterValue]]:
        with self._lock:
            return list(self._series.items())


class AgentMetrics:
    """Every metric of one agent (a registry of its own when served, never the global one)."""

    def __init__(self, *, wall: Callable[[], float] = time.time) -> None:
        self.wall = wall
        self.snapshot: Callable[[], AgentState] | None = None
        self.last_ack_unix: float | None = None
        self._registry: CollectorRegistry | None = None
        self.lines_read = Counter("lines_read", "Lines read from log files", ("source",))
        self.events_spooled = Counter("events_spooled", "Events written to the spool", ("source",))
        self.parse_errors = Counter(
            "parse_errors", "Records shipped with the parse_error flag", ("source",)
        )
        self.events_sent = Counter("events_sent", "Events sent (resends included)")
        self.events_acked = Counter("events_acked", "Events acknowledged by a collector")
        self.batches_acked = Counter("batches_acked", "Batches acknowledged by a collector")
        self.config_reloads = Counter("config_reloads", "SIGHUP config reloads", ("result",))
        self.counters = (
            self.lines_read,
            self.events_spooled,
            self.parse_errors,
            self.events_sent,
            self.events_acked,
            self.batches_acked,
            self.config_reloads,
        )

    def acked(self, events: int) -> None:
        self.events_acked.inc(events)
        self.batches_acked.inc()
        self.last_ack_unix = self.wall()

    def exposition(self) -> bytes:
        from agent import metrics_export

        if self._registry is None:
            self._registry = metrics_export.registry(self)
        return metrics_export.generate_latest(self._registry)


class MetricsServer:
    """Serves GET /metrics (Prometheus text format) on `listen` in a daemon thread.
    (The HTTP server modules, like prometheus-client, are imported only here.)"""

    def __init__(self, listen: str, metrics: AgentMetrics) -> None:
        from agent.metrics_export import CONTENT_TYPE_LATEST
        from proto.httpendpoint import HttpEndpoint

        self._endpoint = HttpEndpoint(
            listen,
            {"/metrics": lambda: (200, metrics.exposition(), CONTENT_TYPE_LATEST)},
            "agent-metrics",
        )

    def start(self) -> int:
        """Bind and serve; OSError when the address cannot be bound."""
        port = self._endpoint.start()
        log.info("metrics on http://%s:%d/metrics", self._endpoint.host, port)
        return port

    def stop(self) -> None:
        self._endpoint.stop()
