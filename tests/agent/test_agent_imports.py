"""What a JSON-lines agent loads: the modules only some configurations need stay out of
memory until a configuration needs them (bench.agent_memory measures what they cost),
and the metrics counted without prometheus-client export the same samples through it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import AgentMetrics, AgentState

REPO = Path(__file__).resolve().parents[2]
OPTIONAL = (
    "prometheus_client",
    "jmespath",
    "agent.parsers.pgaudit",
    "agent.parsers.mariadb",
    "agent.parsers.mysql",
    "agent.parsers.salesforce",
    "agent.parsers.sql",
    "agent.parsers.regex",
)


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {OPTIONAL!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


def test_jsonlines_agent_loads_no_optional_module() -> None:
    code = """
from pathlib import Path
import agent.runtime
from agent.config import load_config_and_secrets
from agent.parsers import get_parser
loaded, _ = load_config_and_secrets(Path("config/agent.yaml"), {}, tls_files=False)
assert {s.format for s in loaded.sources} == {"jsonlines"}
for s in loaded.sources:
    get_parser(s.format, s.mapping, s.parsed_options(), s.actions)
"""
    assert _loaded_after(code) == set()


def test_a_source_loads_what_it_uses() -> None:
    code = """
from agent.parsers import get_parser
get_parser("pgaudit", {})
get_parser("jsonlines", {"user.id": "actors[0].id"})
"""
    assert _loaded_after(code) == {"jmespath", "agent.parsers.pgaudit", "agent.parsers.sql"}


def test_counters_export_their_samples() -> None:
    metrics = AgentMetrics(wall=lambda: 1000.0)
    metrics.lines_read.labels(source="app").inc(31)
    metrics.parse_errors.labels(source="app").inc()
    metrics.events_sent.inc(40)
    metrics.acked(31)
    metrics.snapshot = lambda: AgentState(10, 1, 32, 31, 0, {"app": 2}, {"c:1": "connected"})
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
    }
    ns = "crm_audit_agent_"
    assert samples[(ns + "lines_read_total", (("source", "app"),))] == 31
    assert samples[(ns + "parse_errors_total", (("source", "app"),))] == 1
    assert samples[(ns + "events_sent_total", ())] == 40
    assert samples[(ns + "events_acked_total", ())] == 31
    assert samples[(ns + "batches_acked_total", ())] == 1
    assert (ns + "events_spooled_total", (("source", "app"),)) not in samples  # never counted
    assert samples[(ns + "spool_unacked_events", ())] == 0
    assert samples[(ns + "last_ack_timestamp_seconds", ())] == 1000.0
    assert (ns + "lines_read_created", (("source", "app"),)) in samples
