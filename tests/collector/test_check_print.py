"""`crm-audit-collector check -c FILE --print` and `${...}` substitution in collector.yaml,
through the real console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from collector.config import load_config_and_secrets
from proto.yamlconfig import MASK
from tests.collector.conftest import Pki, write_config

CLI = Path(sys.executable).parent / "crm-audit-collector"


def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "OPENSEARCH_URL"}
    return subprocess.run(
        [str(CLI), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    )


def _config(tmp_path: Path, pki: Pki) -> Path:
    directory = tmp_path / "cfg"
    directory.mkdir()
    password = directory / "secrets" / "os-password"
    password.parent.mkdir()
    password.write_text("correct-horse\n")
    password.chmod(0o600)
    # The username comes from a file, the URL (with credentials) from the environment.
    (directory / "secrets" / "os-user").write_text("svc-collector\n")
    return write_config(
        directory,
        pki,
        opensearch={
            "url": "${OS_URL}",
            "index_prefix": "crm-audit",
            "username": "${file:secrets/os-user}",
            "password_file": "secrets/os-password",
        },
        metrics={"listen": "127.0.0.1:${METRICS_PORT}"},
    )


def test_print_shows_effective_config_with_secrets_masked(tmp_path: Path, pki: Pki) -> None:
    path = _config(tmp_path, pki)
    env = {"OS_URL": "http://admin:Sup3rS3cret@127.0.0.1:9200", "METRICS_PORT": "9464"}
    result = run_cli("check", "-c", "collector.yaml", "--print", cwd=path.parent, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# effective config of collector.yaml")
    for secret in ("Sup3rS3cret", "svc-collector", "correct-horse", "admin:"):
        assert secret not in result.stdout
    data = yaml.safe_load(result.stdout)
    opensearch = data["opensearch"]
    assert opensearch["url"] == MASK and opensearch["username"] == MASK
    # File paths are not secrets: shown, resolved against the config dir.
    assert opensearch["password_file"] == str(path.parent.resolve() / "secrets/os-password")
    assert Path(data["tls"]["key"]).resolve() == pki.layout.collector_key.resolve()
    assert data["metrics"]["listen"] == MASK  # partly substituted: the whole value
    # Defaults are filled in.
    assert data["server"]["max_streams_per_agent"] == 2
    assert data["retention"]["classes"]["standard"]["policy"].endswith("ism-standard.json")

    config, secrets = load_config_and_secrets(path, env)
    assert config.opensearch.url == "http://admin:Sup3rS3cret@127.0.0.1:9200"
    assert config.opensearch.username == "svc-collector"
    assert config.metrics.listen == "127.0.0.1:9464"
    assert secrets == {("opensearch", "url"), ("opensearch", "username"), ("metrics", "listen")}


def test_unset_variable_and_missing_file_are_config_errors(tmp_path: Path, pki: Pki) -> None:
    path = _config(tmp_path, pki)
    (path.parent / "secrets" / "os-user").unlink()
    result = run_cli("check", "-c", "collector.yaml", cwd=path.parent, env={"METRICS_PORT": "1"})
    assert result.returncode == 2
    d = path.parent.resolve()
    lines = path.read_text().splitlines()
    url_line = 1 + next(i for i, line in enumerate(lines) if "${OS_URL}" in line)
    user_line = 1 + next(i for i, line in enumerate(lines) if "os-user" in line)
    assert result.stderr.splitlines() == [
        f"collector.yaml:{url_line}: opensearch.url: environment variable OS_URL is not set",
        f"collector.yaml:{user_line}: opensearch.username: ${{file:secrets/os-user}}: "
        f"file not found: {d}/secrets/os-user",
    ]
    assert result.stdout == ""


def test_without_print_it_still_says_ok(tmp_path: Path, pki: Pki) -> None:
    path = _config(tmp_path, pki)
    env = {"OS_URL": "http://127.0.0.1:9200", "METRICS_PORT": "9464"}
    result = run_cli("check", "-c", "collector.yaml", cwd=path.parent, env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "collector.yaml: OK\n", "")
