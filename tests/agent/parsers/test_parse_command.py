from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from agent.parse_command import run_parse
from tests.agent.certs import make_pki

SAMPLES = Path(__file__).parent / "samples"

CONFIG = """\
agent_id: crm-host-1
state_dir: state
collector:
  endpoint: "127.0.0.1:4317"
  tls: {{ca: pki/ca.crt, cert: pki/agents/crm-host-1.crt, key: pki/agents/crm-host-1.key}}
sources:
  - name: pg
    format: pgaudit
    paths: ["logs/*.log"]
    options:
{pg_options}
  - name: sf
    format: salesforce_elf
    paths: ["logs/*.csv"]
    options:
      privacy:
        redact: {{user.name: {{keep_last: 3}}}}
"""


def _config(tmp_path: Path, pg_options: str = "      log_line_prefix: '%m [%p] '") -> Path:
    make_pki(tmp_path / "pki")
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(SAMPLES / "pgaudit_stderr" / "pgaudit-stderr-default-prefix.log", logs / "pg.log")
    shutil.copy(SAMPLES / "salesforce_elf" / "crm-mixed.csv", logs / "sf.csv")
    path = tmp_path / "agent.yaml"
    path.write_text(CONFIG.format(pg_options=pg_options))
    return path


def test_parse_prints_each_sources_events_as_json_lines(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path))
    out = io.StringIO()
    assert run_parse(config, None, [], out) == 0
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["log"]["source_name"] for d in docs] == ["pg"] + ["sf"] * 6
    assert docs[0]["action"] == "db.insert" and docs[0]["log"]["format"] == "pgaudit"
    assert docs[1]["user"]["name"] == "*" * 17 + "ple"  # privacy applied as when running


def test_parse_given_files_with_a_named_source(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path))
    other = tmp_path / "other.csv"
    shutil.copy(SAMPLES / "salesforce_elf" / "salesforce-elf-login.csv", other)
    out = io.StringIO()
    assert run_parse(config, "sf", [other], out) == 0
    (doc,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert doc["log"]["file_path"] == str(other) and doc["action"] == "login"


def test_parse_user_mistakes_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(_config(tmp_path))
    assert run_parse(config, "nope", [], io.StringIO()) == 2
    assert run_parse(config, None, [tmp_path / "agent.yaml"], io.StringIO()) == 2
    assert run_parse(config, "pg", [tmp_path / "missing.log"], io.StringIO()) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("crm-audit-agent parse: unknown source 'nope'")
    assert "--source" in err[1] and "missing.log: no such file" in err[2]


def test_bad_format_options_are_config_errors_with_line_and_key(tmp_path: Path) -> None:
    path = _config(
        tmp_path, "      log_line_prefix: '%y'\n      log_destination: syslog\n      colour: red"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:10: sources.0.options: ")
    assert "log_destination: Input should be 'stderr', 'csvlog' or 'jsonlog'" in problem
    assert "log_line_prefix: unknown escape %y in log_line_prefix" in problem
    assert "colour: unknown key" in problem


def test_parse_counts_lines_the_log_line_prefix_does_not_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(_config(tmp_path, "      log_line_prefix: '%m [%p] %u@%d '"))
    log = tmp_path / "logs" / "pg.log"
    log.write_bytes(log.read_bytes() * 3)  # three mismatched records, one warning
    out = io.StringIO()
    with caplog.at_level("WARNING"):
        assert run_parse(config, "pg", [], out) == 0
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("source pg: ") and "log_line_prefix '%m [%p] %u@%d '" in warning
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    mismatched = [d for d in docs if "prefix_mismatch" in d.get("flags", [])]
    assert len(mismatched) == len(docs) == 3
    summary = capsys.readouterr().err.splitlines()[0]
    assert summary == (
        f"pg: {len(docs)} events ({len(docs)} with parse_error, "
        f"{len(docs)} with prefix_mismatch) from 1 files"
    )
    # a log the configured prefix does not describe is a config fix: --strict fails
    assert run_parse(config, "pg", [], io.StringIO(), strict=True) == 1
