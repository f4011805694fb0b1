"""Results JSON -> terminal table and README markdown.

    python -m bench.report results.json                  # print the markdown section
    python -m bench.report results.json --table          # print the terminal table
    python -m bench.report results.json --update README.md
        # replace the text between the markers below in README.md with the section

Markers: ``<!-- bench-results:begin -->`` and ``<!-- bench-results:end -->``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.scenarios import ORDER

BEGIN = "<!-- bench-results:begin -->"
END = "<!-- bench-results:end -->"
_OWN_TABLES = ("scaling", "parsers")  # rendered by tables of their own, not in rows()


def _num(value: Any, digits: int = 0, suffix: str = "") -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def _ratio(value: Any) -> str:
    return _num(value, 2, "x")


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    scenario: str
    metric: str
    median: str
    runs: str


def _runs(scenario: dict[str, Any], key: str, fmt: Callable[[Any], str]) -> str:
    return " / ".join(fmt(run.get(key)) for run in scenario.get("runs", []))


def _metric_rows(
    name: str, scenario: dict[str, Any], metrics: Sequence[tuple[str, str, Callable[[Any], str]]]
) -> list[Row]:
    median = scenario.get("median", {})
    return [
        Row(name, label, fmt(median.get(key)), _runs(scenario, key, fmt))
        for label, key, fmt in metrics
    ]


def _int(value: Any) -> str:
    return _num(value)


def _one(value: Any) -> str:
    return _num(value, 1)


def _two(value: Any) -> str:
    return _num(value, 2)


def _node_cpu(label: str) -> tuple[str, str, Callable[[Any], str]]:
    """The OpenSearch node's CPU per document of a scenario (when it ran on this machine)."""
    return (label, "opensearch_cpu_s_per_m", _one)


# e2e: the events and seals indices; a peer: its index. Each merged to one segment.
_STORED = ("OpenSearch bytes on disk per event", "stored_bytes_per_event", _int)


def rows(results: dict[str, Any]) -> list[Row]:
    """The main table (every scenario but scaling and parsers, which have tables of their own)."""
    scenarios: dict[str, dict[str, Any]] = results.get("scenarios", {})
    comparisons: dict[str, Any] = results.get("comparisons", {})
    out: list[Row] = []
    for name in (n for n in ORDER if n not in _OWN_TABLES):
        scenario = scenarios.get(name)
        if scenario is None:
            continue
        if scenario.get("status") != "ok":
            out.append(Row(name, scenario.get("status", "?"), "-", scenario.get("reason", "")))
            continue
        if name == "ceiling":
            best = scenario.get("best", {})
            label = f"docs/s (bulk {best.get('bulk_size')} x {best.get('concurrency')} threads)"
            out += _metric_rows(
                name,
                scenario,
                [(label, "docs_per_s", _int), _node_cpu("OpenSearch CPU-s per M documents")],
            )
        elif name == "e2e":
            out += _metric_rows(
                name,
                scenario,
                [
                    ("events/s", "events_per_s", _int),
                    ("agent CPU-s per M events", "agent_cpu_s_per_m", _one),
                    ("collector CPU-s per M events", "collector_cpu_s_per_m", _one),
                    _node_cpu("OpenSearch CPU-s per M events"),
                    _STORED,
                    ("of which event documents", "stored_events_bytes_per_event", _int),
                    (
                        "of which batch documents (events' bytes)",
                        "stored_batches_bytes_per_event",
                        _int,
                    ),
                    ("of which seals", "stored_seals_bytes_per_event", _int),
                    ("agent peak RSS MiB", "agent_peak_rss_mib", _int),
                ],
            )
            out.append(Row(name, "ratio to ceiling", _ratio(comparisons.get("e2e_to_ceiling")), ""))
        elif name == "agent":
            out += _metric_rows(
                name,
                scenario,
                [
                    ("events/s", "events_per_s", _int),
                    ("CPU-s per M events", "cpu_s_per_m", _one),
                    ("peak RSS MiB", "peak_rss_mib", _int),
                ],
            )
        elif name == "latency":
            rate = _int(scenario.get("median", {}).get("rate_per_s"))
            out += _metric_rows(
                name,
                scenario,
                [
                    (f"p50 s at {rate} events/s", "p50_s", _two),
                    (f"p99 s at {rate} events/s", "p99_s", _two),
                ],
            )
        elif name in ("peer", "syslog-ng"):
            peer_name = "rsyslog" if name == "peer" else "syslog-ng"
            out += _metric_rows(
                name,
                scenario,
                [
                    (f"{peer_name} events/s", "events_per_s", _int),
                    (f"{peer_name} CPU-s per M events", "cpu_s_per_m", _one),
                    _node_cpu(f"OpenSearch CPU-s per M events ({peer_name}'s documents)"),
                    _STORED,
                    (f"{peer_name} peak RSS MiB", "peak_rss_mib", _int),
                ],
            )
            peer = comparisons.get("peer" if name == "peer" else "syslog_ng", {})
            out.append(
                Row(name, f"ours ÷ {peer_name}, events/s", _ratio(peer.get("events_per_s")), "")
            )
            out.append(
                Row(
                    name,
                    f"ours ÷ {peer_name}, CPU per event (agent + collector)",
                    _ratio(peer.get("cpu_per_event")),
                    "",
                )
            )
            out.append(
                Row(
                    name,
                    f"ours ÷ {peer_name}, CPU per event (agent only)",
                    _ratio(peer.get("agent_cpu_per_event")),
                    "",
                )
            )
            out.append(
                Row(
                    name,
                    f"ours ÷ {peer_name}, CPU per event with OpenSearch's",
                    _ratio(peer.get("with_opensearch_cpu_per_event")),
                    "",
                )
            )
        elif name == "integrity":
            batch = _int(scenario.get("median", {}).get("batch_size"))
            events = _int(scenario.get("median", {}).get("events"))
            out += _metric_rows(
                name,
                scenario,
                [
                    (
                        "agent event hash µs per event (v2: event_hash of the event bytes)",
                        "event_hash_us_per_event",
                        _one,
                    ),
                    (
                        f"agent sealing µs per event (v2: seal_events, head_link + signature, "
                        f"{batch}-event batches)",
                        "seal_us_per_event",
                        _one,
                    ),
                    (
                        "collector verify_batch µs per event (v2 batch)",
                        "verify_batch_us_per_event",
                        _one,
                    ),
                    (f"crm-audit verify events/s ({events} events)", "verify_events_per_s", _int),
                ],
            )
        elif name == "verify":
            events = _int(scenario.get("median", {}).get("events"))
            form = scenario.get("ingest", {}).get("stream_format", "?")
            out += _metric_rows(
                name,
                scenario,
                [
                    (f"raw read events/s ({events} events, v{form})", "raw_events_per_s", _int),
                    ("crm-audit verify events/s", "verify_events_per_s", _int),
                    ("verify ÷ raw read, events/s", "verify_to_raw", _two),
                    ("raw read CPU-s per million events", "raw_cpu_s_per_m", _one),
                    ("crm-audit verify CPU-s per million events", "verify_cpu_s_per_m", _one),
                    ("crm-audit verify peak RSS MiB", "verify_peak_rss_mib", _int),
                ],
            )
        elif name == "detection":
            median = scenario.get("median", {})
            load = f"{_int(median.get('background_rate_per_s'))} events/s"
            every = f"interval {_num(median.get('interval_s'), 0)} s"
            out += _metric_rows(
                name,
                scenario,
                [
                    (f"per-event rule p50 s (bulk export) at {load}", "inline_p50_s", _two),
                    (f"per-event rule p99 s (bulk export) at {load}", "inline_p99_s", _two),
                    (f"windowed rule p50 s (failed logins, {every})", "windowed_p50_s", _two),
                    (f"windowed rule p99 s (failed logins, {every})", "windowed_p99_s", _two),
                ],
            )
    return out


def parser_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(parser, lines, lines/s, events/s, µs per line) per parser case."""
    scenario = results.get("scenarios", {}).get("parsers")
    if not scenario or scenario.get("status") != "ok":
        return []
    out = []
    for case in scenario.get("cases", []):
        median = case.get("median", {})
        out.append(
            (
                str(case.get("label")),
                _int(median.get("lines")),
                _int(median.get("lines_per_s")),
                _int(median.get("events_per_s")),
                _one(median.get("us_per_line")),
            )
        )
    return out


def scaling_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(files, line bytes, events/s, MiB/s, peak RSS MiB) per scaling case."""
    scenario = results.get("scenarios", {}).get("scaling")
    if not scenario or scenario.get("status") != "ok":
        return []
    out = []
    for case in scenario.get("cases", []):
        median = case.get("median", {})
        out.append(
            (
                str(case.get("files")),
                str(case.get("line_bytes")),
                _int(median.get("events_per_s")),
                _one(median.get("mib_per_s")),
                _int(median.get("peak_rss_mib")),
            )
        )
    return out


def _text_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(header))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)) for row in body]
    return "\n".join(line.rstrip() for line in lines)


def render_table(results: dict[str, Any]) -> str:
    """The table printed at the end of `python -m bench`."""
    main = rows(results)
    parts = []
    if main:  # empty when only scaling and/or parsers ran
        parts.append(
            _text_table(
                ("scenario", "metric", "median", "runs"),
                [(r.scenario, r.metric, r.median, r.runs) for r in main],
            )
        )
    scaling = scaling_rows(results)
    if scaling:
        parts.append(
            "scaling (agent alone, null collector):\n"
            + _text_table(("files", "line B", "events/s", "MiB/s", "peak RSS MiB"), scaling)
        )
    elif "scaling" in results.get("scenarios", {}):
        skipped = results["scenarios"]["scaling"]
        parts.append(f"scaling: {skipped.get('status')}: {skipped.get('reason', '')}")
    parsers = parser_rows(results)
    if parsers:
        parts.append(
            "parsers (framing + parsing, in-process, one core):\n"
            + _text_table(("parser", "lines", "lines/s", "events/s", "µs/line"), parsers)
        )
    elif "parsers" in results.get("scenarios", {}):
        skipped = results["scenarios"]["parsers"]
        parts.append(f"parsers: {skipped.get('status')}: {skipped.get('reason', '')}")
    return "\n\n".join(parts) + "\n"


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]], right: set[int]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(cell(str(c)) for c in row) + " |" for row in body]
    return "\n".join(lines)


def render_markdown(results: dict[str, Any]) -> str:
    """The README's results section (between the markers, markers not included)."""
    machine = results.get("machine", {})
    software = results.get("software", {})
    sizes = results.get("sizes", {})
    started = str(results.get("started_at", "?"))
    lines = [
        "### Results",
        "",
        f"Measured {started[:10]} with `make bench` ({results.get('mode', '?')} size, median of "
        f"{sizes.get('runs', '?')} runs per scenario, {_int(results.get('duration_s'))} s in all).",
        "",
        f"- Machine: {machine.get('cpu_model', '?')}, {machine.get('nproc', '?')} CPUs (`nproc`), "
        f"{machine.get('mem_total_gib', '?')} GiB RAM, {machine.get('os', '?')}, "
        f"Linux {machine.get('kernel', '?')}; load average at start "
        f"{', '.join(str(x) for x in machine.get('loadavg_at_start', []))}.",
        f"- Software: OpenSearch {software.get('opensearch', '?')} "
        f"({software.get('opensearch_how', '?')}), rsyslog {software.get('rsyslog', '-')}, "
        f"syslog-ng {software.get('syslog_ng') or '-'}, "
        f"Python {machine.get('python', '?')}, crm-audit {software.get('crm_audit', '?')}.",
        f"- Sizes: {_int(sizes.get('e2e_events'))} events for ceiling, end-to-end and peer; "
        f"{_int(sizes.get('agent_events'))} for agent alone; "
        f"{_int(sizes.get('scaling_events'))} per scaling case; latency "
        f"{_int(sizes.get('latency_duration_s'))} s at {_int(sizes.get('latency_rate'))} lines/s; "
        f"parsers ~{_int(sizes.get('parser_lines'))} lines each; integrity "
        f"{_int(sizes.get('integrity_events'))} events; verify "
        f"{_int(sizes.get('verify_events'))} events; detection "
        f"{_int(sizes.get('detection_incidents'))} incidents per rule and run.",
    ]
    main = rows(results)
    if main:
        lines += [
            "",
            _md_table(
                ("Scenario", "Metric", "Median", "Runs"),
                [(r.scenario, r.metric, r.median, r.runs) for r in main],
                right={2},
            ),
        ]
    scaling = scaling_rows(results)
    if scaling:
        lines += [
            "",
            "Scaling (agent alone, null collector):",
            "",
            _md_table(
                ("Files", "Line bytes", "Events/s", "MiB/s", "Agent peak RSS MiB"),
                scaling,
                right={2, 3, 4},
            ),
        ]
    parsers = parser_rows(results)
    if parsers:
        lines += [
            "",
            "Parsers (framing + parsing, in-process, one core; the last row adds privacy, "
            "the reading side's stamps and protobuf serialization):",
            "",
            _md_table(
                ("Parser", "Lines", "Lines/s", "Events/s", "µs per line"),
                parsers,
                right={1, 2, 3, 4},
            ),
        ]
    elif "parsers" in results.get("scenarios", {}):
        skipped = results["scenarios"]["parsers"]
        lines += ["", f"Parsers: {skipped.get('status')}: {skipped.get('reason', '')}"]
    return "\n".join(lines) + "\n"


def update_section(document: str, section: str) -> str:
    """`document` with the text between the markers replaced by `section`."""
    try:
        head, rest = document.split(BEGIN, 1)
        _old, tail = rest.split(END, 1)
    except ValueError:
        raise ValueError(f"markers {BEGIN} … {END} not found") from None
    return f"{head}{BEGIN}\n{section}{END}{tail}"


def load(path: Path) -> dict[str, Any]:
    results: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return results


def update_file(readme: Path, results: dict[str, Any]) -> None:
    text = readme.read_text(encoding="utf-8")
    readme.write_text(update_section(text, render_markdown(results)), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("results", type=Path, help="results JSON written by python -m bench")
    parser.add_argument("--table", action="store_true", help="print the terminal table")
    parser.add_argument("--update", type=Path, metavar="FILE", help="rewrite FILE's section")
    args = parser.parse_args(argv)
    try:
        results = load(args.results)
    except (OSError, ValueError) as exc:
        print(f"{args.results}: cannot read results: {exc}", file=sys.stderr)
        return 2
    if args.update is not None:
        try:
            update_file(args.update, results)
        except (OSError, ValueError) as exc:
            print(f"{args.update}: {exc}", file=sys.stderr)
            return 2
        print(f"{args.update}: results section updated")
        return 0
    sys.stdout.write(render_table(results) if args.table else render_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
