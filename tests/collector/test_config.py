"""collector.config via the real console script: `crm-audit-collector check -c ...`.

Each testdata/bad_*.yaml and typo_*.yaml names its expected stderr lines in
``# expect:`` comments ({dir} = the directory the config was copied to).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.admin.pki import init_ca
from collector.config import CollectorConfig, load_config, with_opensearch_url
from collector.errors import ConfigError
from tests.collector.conftest import REPO, Pki

TESTDATA = Path(__file__).parent / "testdata"
CLI = Path(sys.executable).parent / "crm-audit-collector"
BAD = sorted(p.name for p in TESTDATA.glob("*.yaml") if p.name.startswith(("bad_", "typo_")))


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """testdata copied next to a freshly generated pki/ directory."""
    target = tmp_path / "cfg"
    shutil.copytree(TESTDATA, target)
    init_ca(target / "pki")
    return target


def test_bad_config_list_is_not_empty() -> None:
    assert len(BAD) >= 6


@pytest.mark.parametrize("name", BAD)
def test_bad_config_reports_each_problem_on_one_line(workdir: Path, name: str) -> None:
    text = (workdir / name).read_text()
    expected = [
        line.removeprefix("# expect: ").replace("{dir}", str(workdir.resolve()))
        for line in text.splitlines()
        if line.startswith("# expect: ")
    ]
    assert expected, f"{name} has no '# expect:' lines"
    result = run_cli("check", "-c", name, cwd=workdir)
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == expected
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_ok_config_says_ok(workdir: Path) -> None:
    result = run_cli("check", "-c", "ok_minimal.yaml", cwd=workdir)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok_minimal.yaml: OK\n", "")


def test_example_config_in_repo_is_valid(tmp_path: Path) -> None:
    # config/collector.yaml points at ../var/pki; recreate that layout around a copy.
    config_dir = tmp_path / "config"
    shutil.copytree(REPO / "config", config_dir)
    init_ca(tmp_path / "var" / "pki")
    result = run_cli("check", "-c", str(config_dir / "collector.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = load_config(config_dir / "collector.yaml")
    assert config.listen == "127.0.0.1:4317"
    assert config.opensearch.index_prefix == "crm-audit"
    assert config.retention.classes["standard"].policy_body()["policy"]["default_state"] == "hot"


def test_missing_config_file(tmp_path: Path) -> None:
    result = run_cli("check", "-c", "absent.yaml", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (2, "absent.yaml: config file not found\n")


def test_bad_cli_args_one_line_exit_2(tmp_path: Path) -> None:
    result = run_cli("check", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "-c/--config" in result.stderr


def test_world_readable_key_is_refused(workdir: Path) -> None:
    (workdir / "pki" / "collector.key").chmod(0o644)
    result = run_cli("check", "-c", "ok_minimal.yaml", cwd=workdir)
    assert result.returncode == 2
    assert result.stderr == (
        f"ok_minimal.yaml:2: tls.key: private key {workdir.resolve()}/pki/collector.key is "
        "accessible to other users (mode 0644); chmod 600 it\n"
    )


def test_key_of_another_certificate_is_refused(workdir: Path, pki: Pki) -> None:
    shutil.copy(pki.layout.collector_key, workdir / "pki" / "collector.key")
    result = run_cli("check", "-c", "ok_minimal.yaml", cwd=workdir)
    assert result.returncode == 2
    d = workdir.resolve()
    assert result.stderr == (
        f"ok_minimal.yaml:2: tls: key {d}/pki/collector.key does not belong to cert "
        f"{d}/pki/collector.crt\n"
    )


def test_opensearch_url_env_override(workdir: Path) -> None:
    result = run_cli(
        "check", "-c", "ok_minimal.yaml", cwd=workdir, env={"OPENSEARCH_URL": "ftp://x"}
    )
    assert result.returncode == 2
    assert result.stderr == "OPENSEARCH_URL: expected an http:// or https:// URL, got 'ftp://x'\n"
    config = load_config(workdir / "ok_minimal.yaml")
    assert with_opensearch_url(config, "https://os:9200/").opensearch.url == "https://os:9200"


def test_load_config_raises_config_error_with_all_problems(workdir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(workdir / "bad_values.yaml")
    assert len(info.value.problems) == 5
    assert info.value.exit_code == 2


def test_opensearch_auth_keys_are_checked(tmp_path: Path) -> None:
    import yaml

    from tests.collector.conftest import write_config

    pki = Pki(init_ca(tmp_path / "pki"))
    secret = tmp_path / "cfg" / "os-password"
    secret.parent.mkdir(parents=True)
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    path = write_config(
        tmp_path / "cfg",
        pki,
        url="http://127.0.0.1:9200",
        opensearch={
            "url": "http://127.0.0.1:9200",
            "username": "crm-audit-collector",
            "password_file": "os-password",
            "ca": str(pki.layout.ca_cert),
        },
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = "\n".join(info.value.problems)
    assert "opensearch.password_file: " in text and "chmod 600" in text
    secret.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "ca / client_cert need an https:// url" in info.value.problems[0]
    data = yaml.safe_load(path.read_text())
    data["opensearch"]["url"] = "https://127.0.0.1:9200"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    assert config.opensearch.password() == "s3cret"
    assert config.opensearch.setup_on_start is True and config.metrics.listen is None


def _load_with_opensearch(tmp_path: Path, **opensearch: Any) -> CollectorConfig | list[str]:
    """A valid config whose opensearch section (without url) gets `opensearch`: the
    loaded config, or its problems without the file:line part."""
    from tests.collector.conftest import write_config

    pki = Pki(init_ca(tmp_path / "pki"))
    path = write_config(tmp_path / "cfg", pki)
    data = yaml.safe_load(path.read_text())
    del data["opensearch"]["url"]
    data["opensearch"].update(opensearch)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        return load_config(path)
    except ConfigError as exc:
        return [problem.split(": ", 1)[1] for problem in exc.problems]


def test_several_opensearch_nodes(tmp_path: Path) -> None:
    from tests.collector.conftest import write_config

    pki = Pki(init_ca(tmp_path / "pki"))
    path = write_config(tmp_path / "cfg", pki)
    data = yaml.safe_load(path.read_text())
    del data["opensearch"]["url"]
    data["opensearch"]["urls"] = ["http://10.0.0.1:9200/", "http://10.0.0.2:9200"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    config = load_config(path)
    assert config.opensearch.all_urls == ("http://10.0.0.1:9200", "http://10.0.0.2:9200")
    assert config.opensearch.replicas == "0-1"  # the default: one replica once there are two
    single = load_config(write_config(tmp_path / "one", pki, url="http://os:9200"))
    assert single.opensearch.all_urls == ("http://os:9200",)


@pytest.mark.parametrize(
    ("opensearch", "problem"),
    [
        ({"urls": []}, "opensearch.urls: list at least one node URL (or use url for a single one)"),
        (
            {"urls": ["http://a:9200", "https://b:9200"]},
            "opensearch.urls: all URLs must use the same scheme (all http:// or all https://)",
        ),
        (
            {"urls": ["http://a:9200", "http://a:9200/"]},
            "opensearch.urls: http://a:9200 is listed twice",
        ),
        (
            {"urls": ["http://a:9200", "b:9200"]},
            "opensearch.urls.1: expected an http:// or https:// URL, got 'b:9200'",
        ),
        (
            {"url": "http://a:9200", "urls": ["http://a:9200"]},
            "opensearch.urls: set either url or urls, not both",
        ),
        ({"replicas": -1}, "opensearch.replicas: expected 0 to 100 replicas, got -1"),
        (
            {"replicas": True},
            'opensearch.replicas: expected a number of replicas or a range "MIN-MAX", got True',
        ),
        (
            {"replicas": "one"},
            'opensearch.replicas: expected a number of replicas or a range "MIN-MAX" / '
            "\"MIN-all\", got 'one'",
        ),
    ],
)
def test_opensearch_nodes_and_replicas_are_checked(
    tmp_path: Path, opensearch: dict[str, Any], problem: str
) -> None:
    assert _load_with_opensearch(tmp_path, **opensearch) == [problem]


@pytest.mark.parametrize(
    ("replicas", "effective"), [(1, 1), ("2", 2), ("0-all", "0-all"), ("1-3", "1-3")]
)
def test_replicas_a_number_or_a_range(tmp_path: Path, replicas: Any, effective: Any) -> None:
    config = _load_with_opensearch(tmp_path, replicas=replicas)
    assert isinstance(config, CollectorConfig), config
    assert config.opensearch.replicas == effective


def test_opensearch_url_env_override_with_several_nodes(workdir: Path) -> None:
    config = load_config(workdir / "ok_minimal.yaml")
    both = with_opensearch_url(config, "http://a:9200, http://b:9200/")
    assert both.opensearch.all_urls == ("http://a:9200", "http://b:9200")
    # one URL replaces a list from the file
    assert with_opensearch_url(both, "http://c:9200").opensearch.all_urls == ("http://c:9200",)
    result = run_cli(
        "check",
        "-c",
        "ok_minimal.yaml",
        cwd=workdir,
        env={"OPENSEARCH_URL": "http://a:9200,https://b:9200"},
    )
    assert (result.returncode, result.stderr) == (
        2,
        "OPENSEARCH_URL: all URLs must use the same scheme (all http:// or all https://)\n",
    )
