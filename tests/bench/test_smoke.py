"""Smoke run of the benchmark harness at a tiny size, so it cannot rot.

Runs `python -m bench --quick --only agent --runs 1` (real agent process, real mTLS to
the harness's null collector; no OpenSearch needed), then renders its JSON with
`python -m bench.report`. No timing assertions: only that it completes and that the
numbers are well formed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_agent_alone_smoke_run_and_report(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "agent", "--runs", "1",
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
    assert results["machine"]["nproc"] >= 1
    assert results["finished_at"] >= results["started_at"]

    rendered = subprocess.run(
        [sys.executable, "-m", "bench.report", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert rendered.startswith("### Results")
    assert "| agent | events/s |" in rendered

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
            "e2e": {**ok, "median": {"events_per_s": 5.0}, "runs": [{"events_per_s": 5.0}]},
            "agent": {"status": "failed", "reason": "it broke", "median": {}, "runs": []},
            "latency": {**ok, "median": {"p50_s": 1.0, "p99_s": None}, "runs": []},
            "peer": {"status": "skipped", "reason": "no rsyslogd", "median": {}, "runs": []},
            "scaling": {**ok, "median": {}, "runs": [], "cases": [
                {"files": 1, "line_bytes": 100, "median": {"events_per_s": 3.0}}]},
        },
        "comparisons": {"e2e_to_ceiling": 0.5, "peer": {}},
    }  # fmt: skip
    markdown = report.render_markdown(results)
    assert "| e2e | ratio to ceiling | 0.50x |" in markdown
    assert "| agent | failed | - | it broke |" in markdown
    assert "| peer | skipped | - | no rsyslogd |" in markdown
    assert "| 1 | 100 | 3 |" in markdown
    table = report.render_table(results)
    assert "ceiling" in table and "scaling" in table
