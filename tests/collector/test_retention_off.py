"""retention.enforcer: off — the always-on collector of a secured cluster runs no
retention job (its crm_audit_writer role may not delete); `retention run` with that
config is refused. The real node: tests/integration/test_security_plugin.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from collector import cli
from collector.config import load_config
from collector.errors import ConfigError
from collector.index import Response
from collector.retention_job.runner import RetentionRunner, build_job
from tests.collector.conftest import FakeHttp, Pki, write_config


def _config(tmp_path: Path, pki: Pki, enforcer: str) -> Path:
    path = write_config(tmp_path, pki)
    data = yaml.safe_load(path.read_text())
    data["retention"]["enforcer"] = enforcer
    path.write_text(yaml.safe_dump(data))
    return path


def test_off_is_a_valid_enforcer_and_a_typo_is_not(tmp_path: Path, pki: Pki) -> None:
    assert load_config(_config(tmp_path, pki, "off")).retention.enforcer == "off"
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, pki, "of"))
    assert any("retention.enforcer" in p for p in caught.value.problems), caught.value.problems


def test_off_sends_no_request_and_starts_no_thread(tmp_path: Path, pki: Pki) -> None:
    http = FakeHttp(lambda *_: Response(200, {}))
    config = load_config(_config(tmp_path, pki, "off"))
    job = build_job(config, http, clock_ns=time.time_ns)
    report = job.run()
    assert (report.enforcer, report.deleted, report.read_only) == ("off", [], [])
    assert "enforcer is off" in report.skipped
    runner = RetentionRunner(job, interval_s=1, dry_run=False)
    runner.start()
    assert runner._thread is None
    runner.stop()
    assert http.calls == []  # not even the lease


def test_retention_run_with_an_off_config_is_usage_error(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, pki, "off")
    assert cli.main(["retention", "run", "-c", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "retention.enforcer is off" in err[0], err
