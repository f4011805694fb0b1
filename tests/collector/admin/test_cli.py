"""The `crm-audit` console script: exit codes and one-line errors, run as a real process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port, traversable_tmpdir

CLI = Path(sys.executable).parent / "crm-audit"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "OPENSEARCH_URL"}
    return subprocess.run(
        [str(CLI), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
        check=False,
    )


def assert_user_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("crm-audit: ")
    assert message in lines[0]


def test_pki_init_and_agent(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    result = run("pki", "init", str(directory), "--san", "collector.internal", "--days", "30")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((directory / "ca.key").stat().st_mode) == 0o600
    result = run("pki", "agent", str(directory), "crm-host-01")
    assert result.returncode == 0, result.stderr
    assert (directory / "agents" / "crm-host-01.crt").is_file()
    assert stat.S_IMODE((directory / "agents" / "crm-host-01.key").stat().st_mode) == 0o600


def test_pki_init_refuses_existing_ca(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    assert run("pki", "init", str(directory)).returncode == 0
    result = run("pki", "init", str(directory))
    assert_user_error(result, "")
    assert result.stderr.strip() == (
        f"crm-audit: pki init: {directory} already holds a CA ({directory}/ca.crt); "
        "refusing to overwrite"
    )


def test_pki_agent_errors(tmp_path: Path) -> None:
    assert_user_error(run("pki", "agent", str(tmp_path / "none"), "a1"), "no CA in")
    directory = tmp_path / "pki"
    assert run("pki", "init", str(directory)).returncode == 0
    assert run("pki", "agent", str(directory), "a1").returncode == 0
    assert_user_error(run("pki", "agent", str(directory), "a1"), "refusing to overwrite")
    assert_user_error(run("pki", "agent", str(directory), "../evil"), "invalid agent name")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "required"),
        (("pki",), "required"),
        (("pki", "init"), "DIR"),
        (("pki", "init", "x", "--days", "0"), "--days"),
        (("pki", "init", "x", "--days", "soon"), "not an integer"),
        (("opensearch", "restart"), "invalid choice"),
        (("opensearch", "status", "--port", "70000"), "not a TCP port"),
        (("sample",), "--out"),
        (("sample", "--out", "x", "--start", "yesterday"), "ISO 8601"),
        (("sample", "--out", "x", "--rate-per-sec", "-1"), "positive"),
        (("sample", "--out", "x", "--count", "-5"), "negative"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: tuple[str, ...], message: str) -> None:
    assert_user_error(run(*args), message)


def test_help_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "collector.admin.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "pki" in result.stdout and "opensearch" in result.stdout and "sample" in result.stdout


def test_sample_is_reproducible(tmp_path: Path) -> None:
    args = ("--count", "200", "--seed", "9", "--start", "2026-11-27T09:00:00Z")
    assert run("sample", "--out", str(tmp_path / "a.jsonl"), *args).returncode == 0
    assert run("sample", "--out", str(tmp_path / "b.jsonl"), *args).returncode == 0
    first = (tmp_path / "a.jsonl").read_text()
    assert first == (tmp_path / "b.jsonl").read_text()
    records = [json.loads(line) for line in first.splitlines()]
    assert len(records) == 200
    assert records[0]["timestamp"].startswith("2026-11-27T09:00:")


def test_sample_to_stdout_and_append(tmp_path: Path) -> None:
    result = run("sample", "--out", "-", "--count", "3", "--seed", "1")
    assert result.returncode == 0
    assert [json.loads(line)["event"] for line in result.stdout.splitlines()]
    out = tmp_path / "audit.jsonl"
    run("sample", "--out", str(out), "--count", "5")
    run("sample", "--out", str(out), "--count", "5", "--append")
    assert len(out.read_text().splitlines()) == 10


def test_sample_unwritable_output(tmp_path: Path) -> None:
    assert_user_error(run("sample", "--out", str(tmp_path / "missing" / "x.jsonl")), "cannot write")


def test_opensearch_with_external_url_does_not_start_anything(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {"OPENSEARCH_URL": url}
    for action in ("start", "stop"):
        result = run("opensearch", action, "--home", str(tmp_path / "node"), env=env)
        assert result.returncode == 0
        assert "OPENSEARCH_URL is set" in result.stdout
    assert not (tmp_path / "node").exists()
    status = run("opensearch", "status", env=env)
    assert status.returncode == 1
    assert f"url: {url}" in status.stdout and "unreachable" in status.stdout


def test_opensearch_status_of_an_empty_home(tmp_path: Path) -> None:
    result = run("opensearch", "status", "--home", str(tmp_path / "node"))
    assert result.returncode == 1
    assert "not running" in result.stdout
    stop = run("opensearch", "stop", "--home", str(tmp_path / "node"))
    assert stop.returncode == 0 and "not running" in stop.stdout


def test_opensearch_start_on_a_busy_port(tmp_path: Path) -> None:
    root = traversable_tmpdir("crm-audit-test-busy-")  # reachable for crm-audit-os
    try:
        result = _start_on_busy_port(root / "node", tmp_path)
    finally:
        shutil.rmtree(root)
    assert_user_error(result, "on 127.0.0.1 is already in use")


def _start_on_busy_port(home: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # a home that looks installed, so the check does not need a download
        (home / "os" / "bin").mkdir(parents=True)
        (home / "os" / "bin" / "opensearch").write_text("#!/bin/sh\nexit 1\n")
        (home / "install.json").write_text(
            json.dumps({"version": "2.19.6", "dist": "os", "plugins": []})
        )
        env = {"CRM_AUDIT_CACHE": str(tmp_path / "cache")}
        return run("opensearch", "start", "--home", str(home), "--port", str(port), env=env)
