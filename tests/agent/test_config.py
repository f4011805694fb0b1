"""Config validation: each bad_*/typo_* file and the exact lines it must produce."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from agent.parsers import FORMATS
from tests.agent.certs import make_pki

TESTDATA = Path(__file__).parent / "testdata"
CLI = Path(sys.executable).parent / "crm-audit-agent"

EXPECTED = {
    "bad_tls_missing.yaml": [
        "{cfg}:6: collector.tls.ca: file not found: {dir}/missing/ca.crt",
        "{cfg}:7: collector.tls.cert: file not found: {dir}/missing/agent.crt",
        "{cfg}:8: collector.tls.key: file not found: {dir}/missing/agent.key",
    ],
    "bad_tls_content.yaml": [
        "{cfg}:6: collector.tls.ca: not a PEM certificate: {dir}/pki/agents/crm-host-1.key",
        "{cfg}:8: collector.tls.key: not an unencrypted PEM private key: {dir}/pki/ca.crt",
    ],
    "bad_values.yaml": [
        "{cfg}:4: collector.endpoint: expected host:port, got 'localhost'",
        "{cfg}:6: collector.max_in_flight: Input should be greater than or equal to 1",
        "{cfg}:7: collector.retry: max_s must be >= initial_s",
        "{cfg}:9: batch.max_wait_s: Input should be less than or equal to 1",
        "{cfg}:12: sources.0.format: unknown format 'csv' (known: {formats})",
        "{cfg}:16: sources.1.paths: List should have at least 1 item after validation, not 0",
        "{cfg}:17: sources.1.mapping.usr.name: unknown target field (fields: "
        "action, changes, message, object.id, object.name, object.type, organization.id, "
        "organization.name, outcome, record_count, session_id, source.device_id, source.ip, "
        "source.port, source.user_agent, timestamp, user.effective.email, user.effective.id, "
        "user.effective.name, user.email, user.id, user.name, user.roles, "
        "user.target.email, user.target.id, user.target.name, user.target.roles)",
    ],
    "bad_cn.yaml": [
        "{cfg}:2: agent_id: 'crm-host-2' does not match the CN 'crm-host-1' of the client "
        "certificate {dir}/pki/agents/crm-host-1.crt",
    ],
    "bad_yaml.yaml": ["{cfg}:5: invalid YAML: found unexpected end of stream"],
    "typo_keys.yaml": [
        "{cfg}:1: collector: Field required",
        "{cfg}:5: sources.0.paths: Field required",
        "{cfg}:7: sources.0.pths: unknown key",
        "{cfg}:3: colector: unknown key",
    ],
}


def stage(tmp_path: Path, name: str) -> Path:
    """Copy a testdata config next to a fresh PKI (configs use relative paths)."""
    make_pki(tmp_path / "pki")
    target = tmp_path / name
    shutil.copy(TESTDATA / name, target)
    return target


def expected(name: str, cfg: Path) -> list[str]:
    formats = ", ".join(sorted(FORMATS))  # other formats are added by the parser work
    return [line.format(cfg=cfg, dir=cfg.parent, formats=formats) for line in EXPECTED[name]]


def test_good_config_resolves_relative_paths(tmp_path: Path) -> None:
    config = load_config(stage(tmp_path, "good.yaml"))
    assert config.state_dir == tmp_path / "state"
    assert config.collector.tls.ca == tmp_path / "pki" / "ca.crt"
    assert config.sources[0].paths == [str(tmp_path / "logs" / "audit*.jsonl")]
    assert config.sources[0].mapping == {"user.name": "actor.username"}
    assert config.batch.max_wait_s == 1.0 and config.collector.max_in_flight == 4
    assert config.collector.tls_name("127.0.0.1:4317") == "localhost"
    assert config.collector.all_endpoints == ("127.0.0.1:4317",)
    assert config.spool.max_bytes == 1 << 30 and config.sources[0].close_inactive_s == 300


def test_example_config_is_valid_apart_from_its_files() -> None:
    example = Path(__file__).parents[2] / "config" / "agent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(example)
    # Only the TLS files (which exist on a provisioned host only) are missing.
    assert info.value.problems
    assert all(": collector.tls." in p and "file not found" in p for p in info.value.problems)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_configs(tmp_path: Path, name: str) -> None:
    cfg = stage(tmp_path, name)
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert sorted(info.value.problems) == sorted(expected(name, cfg))


def test_testdata_is_all_covered() -> None:
    names = {p.name for p in TESTDATA.glob("*.yaml")}
    assert names == set(EXPECTED) | {"good.yaml"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_command_reports_one_line_per_problem(tmp_path: Path, name: str) -> None:
    cfg = stage(tmp_path, name)
    result = subprocess.run(
        [str(CLI), "check", "-c", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert sorted(result.stderr.splitlines()) == sorted(expected(name, cfg))


def test_check_command_accepts_good_config(tmp_path: Path) -> None:
    cfg = stage(tmp_path, "good.yaml")
    result = subprocess.run(
        [str(CLI), "check", "-c", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_check_command_missing_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "nope.yaml"
    result = subprocess.run(
        [str(CLI), "check", "-c", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"{cfg}: config file not found"]


def test_multiline_and_spool_settings_are_validated(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from agent.config import MultilineConfig, SpoolConfig

    assert MultilineConfig(start_pattern=r"^\d{4}-").timeout_s == 2.0
    with pytest.raises(ValidationError, match="invalid regular expression"):
        MultilineConfig(start_pattern="(unclosed")
    with pytest.raises(ValidationError, match="at most half of max_bytes"):
        SpoolConfig(max_bytes=65_536, segment_bytes=65_536)


def test_relative_paths_in_format_options_resolve_against_the_config_dir(
    tmp_path: Path,
) -> None:
    from agent.parsers.options import FormatOptions

    make_pki(tmp_path / "pki")
    (tmp_path / "pseudonym.key").write_bytes(b"k" * 32)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        """agent_id: crm-host-1
state_dir: state
collector:
  endpoint: "127.0.0.1:4317"
  tls: {ca: pki/ca.crt, cert: pki/agents/crm-host-1.crt, key: pki/agents/crm-host-1.key}
sources:
  - name: crm_app
    format: jsonlines
    paths: ["logs/*.jsonl"]
    options:
      privacy:
        pseudonymize: {fields: [user.name], key_file: pseudonym.key}
""",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(elsewhere)  # the working directory must not matter
        config = load_config(cfg)
        options = config.sources[0].parsed_options()
    assert isinstance(options, FormatOptions)
    assert options.privacy is not None and options.privacy.pseudonymize is not None
    assert options.privacy.pseudonymize.key_file == tmp_path / "pseudonym.key"
    assert config.integrity.heartbeat_interval_s == 60


def test_missing_relative_key_file_is_reported_against_the_config_dir(tmp_path: Path) -> None:
    make_pki(tmp_path / "pki")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        """agent_id: crm-host-1
state_dir: state
collector:
  endpoint: "127.0.0.1:4317"
  tls: {ca: pki/ca.crt, cert: pki/agents/crm-host-1.crt, key: pki/agents/crm-host-1.key}
integrity: {heartbeat_interval_s: 0}
sources:
  - name: crm_app
    format: jsonlines
    paths: ["logs/*.jsonl"]
    options: {privacy: {pseudonymize: {fields: [user.name], key_file: nope.key}}}
""",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    problems = info.value.problems
    assert any(
        p.startswith(f"{cfg}:11: sources.0.options: ") and f"{tmp_path}/nope.key" in p
        for p in problems
    ), problems
    assert f"{cfg}:6: integrity.heartbeat_interval_s: Input should be greater than 0" in problems
