"""`crm-audit-agent parse` tells the admin what did not map, and needs no TLS files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CLI = Path(sys.executable).parent / "crm-audit-agent"

CONFIG = """\
agent_id: crm-host-1
state_dir: state
collector:
  endpoint: "127.0.0.1:4317"
  tls: {ca: /nonexistent/ca.crt, cert: /nonexistent/agent.crt, key: /nonexistent/agent.key}
sources:
  - name: acme
    format: jsonlines
    paths: ["logs/*.jsonl"]
    mapping:
      timestamp: ts
      user.name: actor.login
      organization.id: tenant
      outcome: {path: result, values: {ok: success, denied: failure}}
      action: op
      changes: {path: changes, each: {field: attr, old: from, new: to}}
    actions:
      auth.login: login
      contact.update: record.update
"""

LINES = [
    {"ts": "2026-03-01T09:00:00Z", "actor": {"login": "a"}, "op": "auth.login", "result": "ok"},
    {"ts": "2026-03-01T09:01:00Z", "actor": {"login": "a"}, "op": "auth.login", "result": "??"},
    {"ts": "2026-03-01T09:02:00Z", "actor": {"login": "b"}, "op": "acme.sync", "result": "ok"},
    {"ts": "2026-03-01T09:03:00Z", "actor": {"login": "b"}, "op": "acme.sync", "result": "ok"},
    {"ts": "2026-03-01T09:04:00Z", "actor": {"login": "b"}, "op": "acme.purge", "trace": {"id": 1}},
    {
        "ts": "2026-03-01T09:05:00Z",
        "actor": {"login": "c"},
        "op": "contact.update",
        "result": "ok",
        "tenant": "t1",
        "changes": [{"attr": "limit", "from": 10, "to": 20}],
    },
]


def _setup(tmp_path: Path, lines: list[dict[str, object]]) -> Path:
    (tmp_path / "logs").mkdir()
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (tmp_path / "logs" / "a.jsonl").write_text(text)
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG)
    return config


def _parse(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "parse", "-c", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_report_counts_what_did_not_map_and_strict_fails(tmp_path: Path) -> None:
    config = _setup(tmp_path, LINES)
    result = _parse(config)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = result.stderr.splitlines()
    assert report[0] == "acme: 6 events (0 with parse_error) from 1 files"
    assert "acme:   mapping errors by field: outcome 1" in report
    assert "acme:   unknown actions: acme.sync 2, acme.purge 1" in report
    assert "acme:   unmapped paths: result 1, trace.id 1" in report
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert docs[5]["changes"] == [
        {
            "field": "limit",
            "old_value": "10",
            "new_value": "20",
            "old_type": "VALUE_TYPE_NUMBER",
            "new_type": "VALUE_TYPE_NUMBER",
        }
    ]
    assert docs[5]["organization"] == {"id": "t1"} and docs[5]["action"] == "record.update"
    strict = _parse(config, "--strict")
    assert strict.returncode == 1 and strict.stdout == result.stdout


def test_strict_passes_when_everything_maps(tmp_path: Path) -> None:
    config = _setup(tmp_path, [LINES[0], LINES[5]])
    result = _parse(config, "--strict")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["acme: 2 events (0 with parse_error) from 1 files"]


def test_check_still_requires_the_tls_files(tmp_path: Path) -> None:
    config = _setup(tmp_path, LINES)
    result = subprocess.run(
        [str(CLI), "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "collector.tls.ca: file not found" in result.stderr


def test_a_bad_mapping_is_one_line_per_problem_not_a_traceback(tmp_path: Path) -> None:
    config = _setup(tmp_path, LINES)
    config.write_text(
        CONFIG.replace("values: {ok: success, denied: failure}", "values: [ok]").replace(
            "auth.login: login", "auth.login: logged.in"
        )
    )
    result = _parse(config)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{config}:14: sources.0.mapping.outcome.values: "
        "expected a mapping of source value → value",
        f"{config}:18: sources.0.actions.auth.login: 'logged.in' is not in the built-in "
        "vocabulary (see docs/mapping.md); define it as {action:, audit_category:, "
        "event_category:, event_type:}",
    ]


def test_plain_path_mappings_count_their_unusable_values_too(tmp_path: Path) -> None:
    """A mapping of plain paths only, which the compiled kernel maps when the agent runs
    (agent.native): `parse` still counts each target's unusable values."""
    (tmp_path / "logs").mkdir()
    lines = [
        {"timestamp": "2026-03-01T09:00:00Z", "event": "login", "source_ip": "10.1.1.1"},
        {"timestamp": "2026-03-01T09:01:00Z", "event": "login", "source_ip": "not-an-ip"},
        {"timestamp": "2026-03-01T09:02:00Z", "event": "login", "source_port": [1]},
    ]
    (tmp_path / "logs" / "a.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG.split("    mapping:")[0])
    result = _parse(config)
    assert result.returncode == 0, result.stderr
    report = result.stderr.splitlines()
    assert "acme:   mapping errors by field: source.ip 1, source.port 1" in report
