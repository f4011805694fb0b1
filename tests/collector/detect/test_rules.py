"""The rules file: defaults per kind, validation errors with file:line: key.path, the
`crm-audit rules check` command, and the collector config's optional detection section."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collector.config import load_config
from collector.detect.errors import RulesError
from collector.detect.rules import Calendar, RuleSet, load_rules, parse_duration
from collector.errors import ConfigError
from tests.collector.conftest import REPO, Pki, write_config

TESTDATA = Path(__file__).parent / "testdata"
CLI = Path(sys.executable).parent / "crm-audit"


def test_shipped_rules_file_is_valid_and_covers_every_kind() -> None:
    rules = load_rules(REPO / "config" / "rules.yaml")
    from collector.detect.rules import KINDS

    assert {r.kind for r in rules.rules} == set(KINDS)
    burst = next(r for r in rules.rules if r.id == "failed-login-burst")
    assert (burst.window, burst.threshold, burst.key) == (600, 10, ["user.name"])


def test_defaults_fill_what_a_rule_leaves_out() -> None:
    rules = RuleSet.model_validate(
        {"rules": [{"id": "x", "kind": "bulk_export"}, {"id": "y", "kind": "export_volume"}]}
    )
    bulk, volume = rules.rules
    assert bulk.threshold == 2000 and bulk.suppression == 0 and bulk.inline
    assert volume.window == 3600 and volume.threshold == 5000 and not volume.inline


@pytest.mark.parametrize(
    ("text", "seconds"), [(90, 90), ("30s", 30), ("10m", 600), ("1h", 3600), ("7d", 604800)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_every_problem_is_reported_with_file_line_and_key_path() -> None:
    with pytest.raises(RulesError) as caught:
        load_rules(TESTDATA / "bad_rules.yaml")
    path = TESTDATA / "bad_rules.yaml"
    problems = "\n".join(caught.value.problems)
    assert f"{path}:2: calendars.office.timezone: unknown time zone 'Mars/Olympus'" in problems
    assert f"{path}:2: calendars.office.start: expected HH:MM" in problems
    assert f"{path}:6: rules.1.id: must be lowercase" in problems
    assert f"{path}:9: rules.2.kind: Input should be" in problems
    assert f"{path}:12: rules.3.window: expected a duration" in problems
    assert f"{path}:13: rules.3.allow.ips: not an IP address or CIDR network" in problems
    assert f"{path}:14: rules.3.treshold: unknown key" in problems


def test_rules_check_command_exit_codes() -> None:
    bad = subprocess.run(
        [str(CLI), "rules", "check", "--rules", str(TESTDATA / "bad_rules.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert "rules.3.window: expected a duration" in bad.stderr
    good = subprocess.run(
        [str(CLI), "rules", "check", "--rules", str(REPO / "config" / "rules.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert good.returncode == 0 and "OK" in good.stdout


def test_calendar_in_its_time_zone() -> None:
    cal = Calendar(timezone="Europe/Berlin", start="07:00", end="19:00", holidays=["2026-12-24"])
    ns = 1_000_000_000
    monday_0630_utc = 1793601000 * ns  # 2026-11-02T06:30Z = 07:30 Berlin
    assert cal.is_business_time(monday_0630_utc)
    assert not cal.is_business_time(monday_0630_utc - 3600 * ns)  # 06:30 Berlin
    assert not cal.is_business_time(monday_0630_utc + 5 * 86400 * ns)  # Saturday
    assert not cal.is_business_time(1798097400 * ns)  # 2026-12-24 08:30 Berlin


def test_collector_config_detection_section(tmp_path: Path, pki: Pki) -> None:
    # Old configs (no detection section) stay valid; detection is then off.
    plain = load_config(write_config(tmp_path / "a", pki))
    assert plain.detection.rules is None
    rules = tmp_path / "b" / "rules.yaml"
    rules.parent.mkdir()
    rules.write_text((REPO / "config" / "rules.yaml").read_text())
    config = load_config(
        write_config(tmp_path / "b", pki, detection={"rules": "rules.yaml", "interval_s": 2})
    )
    assert config.detection.rules == rules and config.detection.interval_s == 2
    # A broken rules file fails the collector config check with the rules' own lines.
    rules.write_text("rules:\n  - id: x\n    kind: failed_login_burst\n    window: soon\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "b" / "collector.yaml")
    assert caught.value.problems == [
        f"{rules}:4: rules.0.window: expected a duration such as 30s, 10m, 1h or 7d, got 'soon'"
    ]
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path / "c", pki, detection={"rules": "missing.yaml"}))
    assert "detection.rules: file not found" in caught.value.problems[0]


def test_rules_backfill_and_check_usage_errors_are_one_line() -> None:
    rules = str(REPO / "config" / "rules.yaml")
    env = {k: v for k, v in os.environ.items() if k != "OPENSEARCH_URL"}
    cases = [
        (["rules", "backfill", "--rules", rules, "--from", "2026-11-02T00:00:00Z"],
         "rules backfill: --opensearch URL (or $OPENSEARCH_URL) is required"),
        (["rules", "backfill", "--rules", rules, "--opensearch", "http://127.0.0.1:9",
          "--from", "2026-11-02T00:00:00Z", "--to", "2026-11-01T00:00:00Z"],
         "rules backfill: --to must be after --from"),
        (["rules", "backfill", "--rules", rules, "--opensearch", "http://127.0.0.1:9",
          "--from", "2026-11-02T00:00:00Z", "--rule", "nope"],
         "rules backfill: no such rule(s)"),
        (["rules", "check", "--rules", rules, "--opensearch", "http://127.0.0.1:9",
          "--days", "0"], "--days: must be at least 1"),
    ]  # fmt: skip
    for argv, message in cases:
        done = subprocess.run(
            [str(CLI), *argv], capture_output=True, text=True, timeout=60, env=env
        )
        assert done.returncode == 2, (argv, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) <= 2, done.stderr  # usage + one line
