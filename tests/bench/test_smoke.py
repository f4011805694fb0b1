"""Smoke run of the benchmark harness at a tiny size, so it cannot rot.

Runs `python -m bench --quick --only agent,parsers --runs 1` (real agent process, real
mTLS to the harness's null collector; the parsers in-process; no OpenSearch needed),
then renders its JSON with `python -m bench.report`. The OpenSearch scenarios
(integrity, detection, ...) are only rendered, from a synthetic result. No timing
assertions: only that it completes and that the numbers are well formed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench import report

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_agent_alone_and_parsers_smoke_run_and_report(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "agent,parsers", "--runs", "1",
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "events/s" in run.stdout

    results = json.loads(out.read_text())
    agent = results["scenarios"]["agent"]
    assert agent["status"] == "ok", agent["reason"]
    assert len(agent["runs"]) == 1
    measured = agent["runs"][0]
    assert measured["events"] == results["sizes"]["agent_events"]
    for key in ("elapsed_s", "events_per_s", "cpu_s_per_m", "peak_rss_mib", "mib_per_s"):
        assert _positive(measured[key]), (key, measured[key])
        assert _positive(agent["median"][key]), (key, agent["median"][key])
    parsers = results["scenarios"]["parsers"]
    assert parsers["status"] == "ok", parsers["reason"]
    labels = [case["label"] for case in parsers["cases"]]
    for label in ("pgaudit stderr", "pgaudit csvlog", "pgaudit jsonlog", "mariadb_audit",
                  "mysql_enterprise_audit", "percona_audit", "salesforce_elf",
                  "salesforce_json", "jsonlines", "regex"):  # fmt: skip
        assert label in labels
    assert any(case["normalize"] for case in parsers["cases"])
    for case in parsers["cases"]:
        assert len(case["runs"]) == 1
        median = case["median"]
        assert median["parse_errors"] == 0, case["label"]
        assert median["lines"] >= results["sizes"]["parser_lines"] * 0.9, case["label"]
        for key in ("lines_per_s", "events_per_s", "us_per_line"):
            assert _positive(median[key]), (case["label"], key, median[key])
    assert "parsers (framing + parsing" in run.stdout
    assert results["machine"]["nproc"] >= 1
    assert results["finished_at"] >= results["started_at"]

    rendered = subprocess.run(
        [sys.executable, "-m", "bench.report", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert rendered.startswith("### Results")
    assert "| agent | events/s |" in rendered
    assert "| pgaudit csvlog | " in rendered

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.BEGIN}\nold\n{report.END}\n\nafter\n")
    assert report.main([str(out), "--update", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text
    assert text.endswith(f"{report.END}\n\nafter\n")
    assert "| agent | events/s |" in text


def test_report_renders_every_scenario_shape() -> None:
    """The renderer on a synthetic result holding every scenario, one failed."""
    ok = {"status": "ok", "reason": ""}
    results = {
        "started_at": "2026-01-01T00:00:00+00:00",
        "mode": "quick",
        "duration_s": 1.0,
        "machine": {"cpu_model": "cpu", "nproc": 2, "mem_total_gib": 1.0},
        "software": {"opensearch": "2.19.6"},
        "sizes": {"runs": 1},
        "scenarios": {
            "ceiling": {**ok, "median": {"docs_per_s": 10.0}, "runs": [{"docs_per_s": 10.0}],
                        "best": {"bulk_size": 500, "concurrency": 2}},
            "e2e": {**ok, "median": {"events_per_s": 5.0, "opensearch_cpu_s_per_m": 250.25,
                                     "stored_bytes_per_event": 812.4},
                    "runs": [{"events_per_s": 5.0, "opensearch_cpu_s_per_m": 250.25}]},
            "agent": {"status": "failed", "reason": "it broke", "median": {}, "runs": []},
            "latency": {**ok, "median": {"p50_s": 1.0, "p99_s": None}, "runs": []},
            "peer": {"status": "skipped", "reason": "no rsyslogd", "median": {}, "runs": []},
            "scaling": {**ok, "median": {}, "runs": [], "cases": [
                {"files": 1, "line_bytes": 100, "median": {"events_per_s": 3.0}}]},
            "parsers": {**ok, "median": {}, "runs": [], "cases": [
                {"label": "pgaudit stderr", "format": "pgaudit", "normalize": False,
                 "median": {"lines": 2000, "lines_per_s": 8000.0, "events_per_s": 8000.0,
                            "us_per_line": 125.0}, "runs": []},
                {"label": "normalize: jsonlines + privacy + serialize", "format": "jsonlines",
                 "normalize": True, "median": {"lines": 2000, "lines_per_s": 11000.0},
                 "runs": []}]},
            "integrity": {**ok, "median": {
                "events": 2000, "batch_size": 500, "event_hash_us_per_event": 4.1,
                "seal_us_per_event": 3.4, "verify_batch_us_per_event": 3.8,
                "verify_events_per_s": 3500.0}, "runs": [{"event_hash_us_per_event": 4.1}],
                "ingest": {"ingest_s": 1.0, "ingest_events": 2000}},
            "detection": {**ok, "median": {
                "background_rate_per_s": 500.0, "interval_s": 5.0, "inline_p50_s": 1.2,
                "inline_p99_s": 1.9, "windowed_p50_s": 4.5, "windowed_p99_s": None},
                "runs": [{"inline_p50_s": 1.2}, {"inline_p50_s": 1.4}]},
        },
        "comparisons": {"e2e_to_ceiling": 0.5, "peer": {}},
    }  # fmt: skip
    markdown = report.render_markdown(results)
    assert "| e2e | ratio to ceiling | 0.50x |" in markdown
    assert "| e2e | OpenSearch CPU-s per M events | 250.2 | 250.2 |" in markdown
    assert "| e2e | OpenSearch bytes on disk per event | 812 | - |" in markdown
    assert "| ceiling | OpenSearch CPU-s per M documents | - | - |" in markdown
    assert "| agent | failed | - | it broke |" in markdown
    assert "| peer | skipped | - | no rsyslogd |" in markdown
    assert "| 1 | 100 | 3 |" in markdown
    assert "| pgaudit stderr | 2,000 | 8,000 | 8,000 | 125.0 |" in markdown
    assert "| normalize: jsonlines + privacy + serialize | 2,000 | 11,000 | - | - |" in markdown
    assert (
        "| integrity | agent event hash µs per event (v2: event_hash of the event bytes) "
        "| 4.1 | 4.1 |" in markdown
    )
    assert (
        "| integrity | agent sealing µs per event (v2: seal_events, head_link + signature, "
        "500-event batches) | 3.4 |" in markdown
    )
    assert "| integrity | collector verify_batch µs per event (v2 batch) | 3.8 |" in markdown
    assert "| integrity | crm-audit verify events/s (2,000 events) | 3,500 |" in markdown
    assert (
        "| detection | per-event rule p50 s (bulk export) at 500 events/s | 1.20 | 1.20 / 1.40 |"
        in markdown
    )
    assert "| detection | windowed rule p50 s (failed logins, interval 5 s) | 4.50 |" in markdown
    assert "| detection | windowed rule p99 s (failed logins, interval 5 s) | - |" in markdown
    table = report.render_table(results)
    assert "ceiling" in table and "scaling" in table
    assert "parsers (framing + parsing" in table and "detection" in table


def test_report_renders_a_failed_parsers_scenario() -> None:
    results = {
        "scenarios": {"parsers": {"status": "failed", "reason": "no samples", "cases": []}},
        "sizes": {"runs": 1},
    }
    assert "parsers: failed: no samples" in report.render_table(results)
    assert "Parsers: failed: no samples" in report.render_markdown(results)


def test_comparisons_add_the_nodes_cpu_to_each_shipper() -> None:
    """The with-OpenSearch ratio: (agent + collector + node) over (peer + node), from the
    medians; absent where a side did not measure the node."""
    from bench.cli import comparisons
    from bench.scenarios.base import ScenarioResult

    def result(name: str, median: dict[str, float]) -> ScenarioResult:
        done = ScenarioResult(name)
        done.runs = [median]
        return done.finish()

    both = comparisons(
        {
            "e2e": result("e2e", {"events_per_s": 4.0, "pipeline_cpu_s_per_m": 100.0,
                                  "agent_cpu_s_per_m": 50.0, "opensearch_cpu_s_per_m": 300.0}),
            "peer": result("peer", {"events_per_s": 5.0, "cpu_s_per_m": 60.0,
                                    "opensearch_cpu_s_per_m": 140.0}),
            "syslog-ng": result("syslog-ng", {"events_per_s": 8.0, "cpu_s_per_m": 60.0}),
        }
    )  # fmt: skip
    assert both["peer"]["with_opensearch_cpu_per_event"] == 2.0
    assert both["peer"]["cpu_per_event"] == 100.0 / 60.0
    assert both["syslog_ng"]["with_opensearch_cpu_per_event"] is None


def test_rounds_interleave_the_contenders_and_keep_only_measured_runs() -> None:
    """Run n of every contender before run n + 1 of any; warm-ups are not kept; a
    contender that fails is reported failed and leaves the rounds, the others go on."""
    from bench.rounds import Contender, run_rounds
    from bench.scenarios.base import ScenarioResult

    calls: list[str] = []

    def once(name: str, fail_at: int | None = None) -> Callable[[], dict[str, float]]:
        def run() -> dict[str, float]:
            calls.append(name)
            if fail_at is not None and calls.count(name) == fail_at:
                raise RuntimeError(f"{name} broke")
            return {"events_per_s": float(len(calls))}

        return run

    def fail(result: ScenarioResult, exc: BaseException, _say: object) -> None:
        result.status, result.reason = "failed", str(exc)

    ceiling, e2e, peer = ScenarioResult("ceiling"), ScenarioResult("e2e"), ScenarioResult("peer")
    run_rounds(
        [
            Contender(ceiling, once("ceiling"), str, warm=False),
            Contender(e2e, once("e2e"), str),
            Contender(peer, once("peer", fail_at=3), str),
        ],
        runs=3,
        warmups=1,
        say=lambda _message: None,
        fail=fail,
    )
    assert calls == [
        "e2e", "peer",  # warm-ups
        "ceiling", "e2e", "peer",
        "ceiling", "e2e", "peer",  # the peer's third call fails
        "ceiling", "e2e",
    ]  # fmt: skip
    assert [run["events_per_s"] for run in e2e.runs] == [4.0, 7.0, 10.0]
    assert len(ceiling.runs) == 3 and len(peer.runs) == 1
    assert peer.status == "failed" and peer.reason == "peer broke"
