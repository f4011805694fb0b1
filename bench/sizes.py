"""How big each scenario is: the full preset (`make bench`) and the quick one (--quick).

The full preset is sized for <= 15 minutes on a 2-core machine. Extrapolated from quick
runs on the 2-core reference machine (OpenSearch ~9k docs/s, end to end ~2-3k
events/s, agent alone ~10k events/s at 100-500 B lines and ~1.6k events/s at 1 KiB):
preparation ~0.5 min, ceiling ~1, end-to-end ~1.5, agent ~0.7, latency ~1.3, peer ~1,
scaling ~3.5: about 10 minutes (measured: ~5). The scenarios added later: parsers ~1
(in-process), integrity ~0.7 (in-process costs, one ingest of 20k sealed events,
`crm-audit verify` 3 times) and detection ~2.5 (per run: start-up, the first rule
evaluation, 10 incidents 2.3 s apart under 500 lines/s of background traffic, the last
alert): about 4 minutes more. The verify scenario ships its 100,000 events once through
agent and collector (~40 s at ~2.5k events/s) and then reads them raw and `verify`s them
three times (~30 s each at v1's ~3.5k events/s): about 2 minutes. The quick preset takes
about 2.5 minutes and its numbers are dominated by start-up and by the 1 s polling: a
check, not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Sizes:
    """Per-scenario sizes and the number of measured runs of each."""

    runs: int
    e2e_events: int  # end-to-end and peer (the same files), and the ceiling's documents
    ceiling_probe_docs: int  # documents per grid point when searching the best bulk set-up
    ceiling_bulk_sizes: tuple[int, ...]
    ceiling_concurrency: tuple[int, ...]
    agent_events: int
    latency_rate: float  # events/s written
    latency_duration_s: float
    latency_probe_every: int  # every n-th line is a probe
    scaling_events: int  # per case
    parser_lines: int  # per parser: sample files replicated to about this many lines
    integrity_events: int  # hashed, sealed, verified in-process; shipped once and `verify`ed
    detection_incidents: int  # per rule (bulk export, failed-login burst) and run
    verify_events: int  # shipped once through agent + collector; read raw and `verify`ed
    integrity_batch: int = 500  # events per sealed batch (the agent's batch.max_events)
    detection_rate: float = 500.0  # background lines/s while incidents are written
    detection_interval_s: float = 5.0  # the collector's detection.interval_s (its default)
    detection_spacing_s: float = 2.3  # between incidents; no multiple of the interval
    scaling_files: tuple[int, ...] = (1, 10, 100)
    scaling_line_bytes: tuple[int, ...] = (100, 1024)
    write_chunk_lines: int = 1000  # lines per append(2) when writing a corpus
    # Unreported runs at the start of each shipping scenario (end to end, rsyslog,
    # syslog-ng): in every scenario the first run cost OpenSearch 1.3-2x the CPU per
    # document of the runs after it (the node adapting to that scenario's documents and
    # requests), so without them a scenario's median leaned on where it ran in the order.
    shipping_warmups: int = 1

    def with_runs(self, runs: int | None) -> Sizes:
        return self if runs is None else replace(self, runs=runs)

    def as_json(self) -> dict[str, object]:
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in self.__dict__.items()
        }


FULL = Sizes(
    runs=3,
    e2e_events=60_000,
    ceiling_probe_docs=20_000,
    ceiling_bulk_sizes=(500, 2000, 5000),
    ceiling_concurrency=(1, 2, 4),
    agent_events=100_000,
    latency_rate=1000.0,
    latency_duration_s=20.0,
    latency_probe_every=100,
    scaling_events=20_000,
    parser_lines=20_000,
    integrity_events=20_000,
    detection_incidents=10,
    verify_events=100_000,
)

QUICK = Sizes(
    runs=2,
    e2e_events=3_000,
    ceiling_probe_docs=1_000,
    ceiling_bulk_sizes=(500, 2000),
    ceiling_concurrency=(1, 2),
    agent_events=5_000,
    latency_rate=1000.0,
    latency_duration_s=4.0,
    latency_probe_every=100,
    scaling_events=2_000,
    parser_lines=2_000,
    integrity_events=2_000,
    detection_incidents=2,
    verify_events=2_000,
    shipping_warmups=0,
)
