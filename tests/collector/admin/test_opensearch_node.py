"""Embedded OpenSearch node: config, defaults, download logic, and one real start/stop."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from collector.admin import opensearch_node as node_mod
from collector.admin.errors import DownloadError, InstallError, NodeSetupError, NodeStartError
from collector.admin.opensearch_node import EmbeddedOpenSearch
from collector.urls import redact_url
from tests.helpers import TEST_NODE_JAVA_OPTS, free_port, traversable_tmpdir

CLI = Path(sys.executable).parent / "crm-audit"

# ---------------------------------------------------------------------- config, defaults


def test_config_without_ism_has_no_ism_settings(tmp_path: Path) -> None:
    text = node_mod.render_config(
        http_port=19200,
        transport_port=19300,
        data_dir=tmp_path / "data",
        logs_dir=tmp_path / "logs",
        ism=False,
    )
    lines = dict(line.split(": ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines == {
        "cluster.name": "crm-audit-embedded",
        "node.name": "crm-audit-node-1",
        "network.host": "127.0.0.1",
        "http.port": "19200",
        "transport.port": "19300",
        "discovery.type": "single-node",
        "path.data": json.dumps(str(tmp_path / "data")),
        "path.logs": json.dumps(str(tmp_path / "logs")),
    }
    assert "index_state_management" not in text


def test_config_with_ism_sets_fast_job_interval(tmp_path: Path) -> None:
    text = node_mod.render_config(
        http_port=1, transport_port=2, data_dir=tmp_path, logs_dir=tmp_path, ism=True
    )
    assert "plugins.index_state_management.job_interval: 1\n" in text
    assert "plugins.index_state_management.jitter: 0.0\n" in text


def test_defaults_for_root_keep_the_home_out_of_root_home() -> None:
    defaults = node_mod.defaults_from_env({"HOME": "/root"}, 0)
    assert defaults.home == Path("/var/lib/crm-audit/opensearch-node")
    assert defaults.cache_dir == Path("/root/.cache/crm-audit/dist")
    assert defaults.run_as == "crm-audit-os"


def test_defaults_for_a_user_and_cache_override() -> None:
    defaults = node_mod.defaults_from_env({"HOME": "/home/ann", "CRM_AUDIT_CACHE": "/c"}, 1000)
    assert defaults.home == Path("/home/ann/.cache/crm-audit/node")
    assert defaults.cache_dir == Path("/c")
    assert defaults.run_as is None


def test_java_home_from_environment_wins() -> None:
    env = {"OPENSEARCH_JAVA_HOME": "/opt/a", "JAVA_HOME": "/opt/b"}
    assert node_mod.find_java_home(env) == Path("/opt/a")
    assert node_mod.find_java_home({"JAVA_HOME": "/opt/b"}) == Path("/opt/b")


def test_java_home_is_found_without_environment() -> None:
    found = node_mod.find_java_home({"PATH": os.defpath})
    assert found is not None and (found / "bin" / "java").is_file()


# ---------------------------------------------------------------------- download, unpack


def _fake_mvn(directory: Path, available: list[str]) -> Path:
    """A stand-in for mvn that 'resolves' only the given coordinates (G:A:V)."""
    script = directory / "mvn"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import sys, pathlib
            args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("-D"))
            group, artifact, version, _ = args["artifact"].split(":")
            log = pathlib.Path({str(directory / "calls")!r})
            with log.open("a") as handle:
                handle.write(args["artifact"] + "\\n")
            if f"{{group}}:{{artifact}}:{{version}}" not in {available!r}:
                print("[ERROR] Failed to execute goal: Could not find artifact " + args["artifact"])
                sys.exit(1)
            out = pathlib.Path(args["outputDirectory"]) / f"{{artifact}}-{{version}}.zip"
            out.write_bytes(b"zip of " + args["artifact"].encode())
            """
        )
    )
    script.chmod(0o755)
    return script


def test_fetch_falls_back_to_an_older_version_and_reports_missing_ism(tmp_path: Path) -> None:
    mvn = _fake_mvn(
        tmp_path,
        [
            "org.opensearch.distribution.integ-test-zip:opensearch:2.19.6",
            "org.opensearch.distribution.integ-test-zip:opensearch:2.19.5",
            "org.opensearch.plugin:opensearch-job-scheduler:2.19.5.0",
        ],
    )
    messages: list[str] = []
    downloads = node_mod.fetch_distribution(
        tmp_path / "cache", ["2.19.6", "2.19.5"], log=messages.append, mvn=str(mvn)
    )
    assert downloads.version == "2.19.5"
    assert downloads.core == tmp_path / "cache" / "opensearch-2.19.5.zip"
    assert downloads.job_scheduler.name == "opensearch-job-scheduler-2.19.5.0.zip"
    assert downloads.ism is None
    assert len(messages) == 1 and "ISM plugin not available from Maven Central" in messages[0]
    # nothing half-downloaded is left in the cache; the ISM miss is remembered
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "opensearch-2.19.5.zip",
        "opensearch-2.19.6.zip",
        "opensearch-index-management-2.19.5.0.zip.missing",
        "opensearch-job-scheduler-2.19.5.0.zip",
    ]


def test_a_missing_ism_plugin_is_not_asked_for_again_within_a_day(tmp_path: Path) -> None:
    mvn = _fake_mvn(
        tmp_path,
        [
            "org.opensearch.distribution.integ-test-zip:opensearch:2.19.6",
            "org.opensearch.plugin:opensearch-job-scheduler:2.19.6.0",
        ],
    )
    cache = tmp_path / "cache"
    calls = tmp_path / "calls"

    def ism_asked() -> int:
        return calls.read_text().count("opensearch-index-management")

    node_mod.fetch_distribution(cache, ["2.19.6"], log=lambda _: None, mvn=str(mvn))
    assert ism_asked() == 1
    messages: list[str] = []
    downloads = node_mod.fetch_distribution(cache, ["2.19.6"], log=messages.append, mvn=str(mvn))
    assert downloads.ism is None and ism_asked() == 1  # remembered
    assert "ISM plugin not available" in messages[0]  # and still said
    marker = cache / "opensearch-index-management-2.19.6.0.zip.missing"
    old = time.time() - node_mod.MISS_TTL_SECONDS - 60
    os.utime(marker, (old, old))
    node_mod.fetch_distribution(cache, ["2.19.6"], log=lambda _: None, mvn=str(mvn))
    assert ism_asked() == 2  # a day later: asked again


def test_fetch_uses_the_cache_without_mvn(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in (
        "opensearch-2.19.6.zip",
        "opensearch-job-scheduler-2.19.6.0.zip",
        "opensearch-index-management-2.19.6.0.zip",
    ):
        (cache / name).write_bytes(b"cached")
    downloads = node_mod.fetch_distribution(cache, ["2.19.6"], mvn="/nonexistent/mvn")
    assert downloads.ism == cache / "opensearch-index-management-2.19.6.0.zip"


def test_fetch_fails_clearly_when_nothing_resolves(tmp_path: Path) -> None:
    mvn = _fake_mvn(tmp_path, [])
    with pytest.raises(DownloadError, match=r"2\.19\.6, 2\.19\.5.*Could not find artifact"):
        node_mod.fetch_distribution(tmp_path / "cache", ["2.19.6", "2.19.5"], mvn=str(mvn))


def test_missing_mvn_is_a_setup_error(tmp_path: Path) -> None:
    with pytest.raises(NodeSetupError, match="Maven"):
        node_mod.fetch_distribution(tmp_path, ["2.19.6"], mvn=str(tmp_path / "no-mvn"))


def test_unpack_keeps_executable_bits(tmp_path: Path) -> None:
    archive = tmp_path / "dist.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        script = zipfile.ZipInfo("opensearch-9/bin/opensearch")
        script.external_attr = (stat.S_IFREG | 0o755) << 16
        bundle.writestr(script, "#!/bin/sh\n")
        config = zipfile.ZipInfo("opensearch-9/config/jvm.options")
        config.external_attr = (stat.S_IFREG | 0o644) << 16
        bundle.writestr(config, "-Xms1g\n")
    node_mod.unpack_zip(archive, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out/opensearch-9/bin/opensearch").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out/opensearch-9/config/jvm.options").stat().st_mode) == 0o644


def test_unpack_refuses_paths_outside_the_target(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../escaped", "x")
    with pytest.raises(InstallError, match="escapes"):
        node_mod.unpack_zip(archive, tmp_path / "out")
    assert not (tmp_path / "escaped").exists()


# ---------------------------------------------------------------------- processes, homes


def test_home_under_a_private_directory_is_refused_for_another_user(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(NodeSetupError, match="not reachable"):
        node_mod.check_traversable(private / "home", uid=54321, gid=54321)


def test_pid_alive() -> None:
    assert node_mod.pid_alive(os.getpid())
    child = subprocess.Popen(["true"])
    child.wait()
    assert not node_mod.pid_alive(child.pid)


def test_not_running_node_and_stale_pidfile(tmp_path: Path) -> None:
    node = EmbeddedOpenSearch(tmp_path / "home", free_port(), run_as=None)
    assert not node.is_running()
    assert node.stop() is False
    (tmp_path / "home").mkdir()
    node.pidfile.write_text(f"{os.getpid()}\n")  # alive, but not OpenSearch
    assert not node.is_running()
    assert node.stop() is False
    assert not node.pidfile.exists()


def _fake_install(home: Path, script: str) -> None:
    """A home that looks installed, whose `bin/opensearch` is `script`."""
    binary = home / "os" / "bin" / "opensearch"
    binary.parent.mkdir(parents=True)
    (home / "os" / "config").mkdir()
    binary.write_text("#!/bin/sh\n" + script + "\n")
    binary.chmod(0o755)
    (home / "install.json").write_text(
        json.dumps({"version": "2.19.6", "dist": "os", "plugins": []})
    )


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    _fake_install(tmp_path / "home", "echo 'java.lang.IllegalStateException: boom'; exit 3")
    node = EmbeddedOpenSearch(tmp_path / "home", free_port(), run_as=None, log=lambda _: None)
    with pytest.raises(NodeStartError, match=r"(?s)exited with 3.*IllegalStateException: boom"):
        node.start(timeout=30)
    assert not node.pidfile.exists()
    config = (tmp_path / "home" / "os" / "config" / "opensearch.yml").read_text()
    assert f"http.port: {node.port}" in config


def test_start_timeout_stops_the_process(tmp_path: Path) -> None:
    _fake_install(tmp_path / "home", "echo starting; exec sleep 60")
    node = EmbeddedOpenSearch(tmp_path / "home", free_port(), run_as=None, log=lambda _: None)
    with pytest.raises(NodeStartError, match=r"(?s)did not reach health yellow.*starting"):
        node.start(timeout=1)
    assert node._proc is not None and node._proc.poll() is not None
    assert not node.pidfile.exists()


class _FakeCluster(BaseHTTPRequestHandler):
    seen_auth: list[str | None] = []
    plugins: list[dict[str, str]] = []

    def do_GET(self) -> None:
        _FakeCluster.seen_auth.append(self.headers.get("Authorization"))
        if self.path.startswith("/_cat/plugins"):
            body = json.dumps(self.plugins).encode()
        elif self.path.startswith("/_cluster/health"):
            body = json.dumps({"status": "green", "number_of_nodes": 1}).encode()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_cluster() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _FakeCluster)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_ism_available_asks_the_cluster_with_url_credentials(fake_cluster: str) -> None:
    _FakeCluster.seen_auth.clear()
    _FakeCluster.plugins = [{"component": "opensearch-job-scheduler"}]
    assert node_mod.ism_available(fake_cluster) is False
    _FakeCluster.plugins.append({"component": "opensearch-index-management"})
    with_user = fake_cluster.replace("http://", "http://admin:s%3Acret@")
    assert node_mod.ism_available(with_user) is True
    expected = "Basic " + base64.b64encode(b"admin:s:cret").decode()
    assert _FakeCluster.seen_auth == [None, expected]
    assert redact_url(with_user) == fake_cluster


# ---------------------------------------------------------------------- the real thing


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def _jvm_arguments(url: str) -> list[str]:
    status, answer = node_mod.http_get_json(url, "/_nodes/_local/jvm")
    assert status == 200, answer
    (node,) = answer["nodes"].values()
    arguments: list[str] = node["jvm"]["input_arguments"]
    return arguments


def test_java_opts_are_the_nodes_environment(tmp_path: Path) -> None:
    default = EmbeddedOpenSearch(tmp_path / "a", free_port(), run_as=None)
    assert default._node_env()["OPENSEARCH_JAVA_OPTS"] == node_mod.JAVA_OPTS
    chosen = EmbeddedOpenSearch(tmp_path / "b", free_port(), run_as=None, java_opts="-Xmx1g")
    assert chosen._node_env()["OPENSEARCH_JAVA_OPTS"] == "-Xmx1g"


@pytest.mark.integration
def test_the_session_node_runs_with_the_test_jvm_options(opensearch_url: str) -> None:
    if os.environ.get("OPENSEARCH_URL"):
        pytest.skip(reason="OPENSEARCH_URL names an external cluster: its JVM options are its own")
    assert set(TEST_NODE_JAVA_OPTS.split()) <= set(_jvm_arguments(opensearch_url))


@pytest.mark.integration
def test_embedded_node_starts_answers_and_stops() -> None:
    root = traversable_tmpdir("crm-audit-test-node-")
    env = {k: v for k, v in os.environ.items() if k != "OPENSEARCH_URL"}
    node = EmbeddedOpenSearch.from_env(env, os.geteuid(), home=root / "node", port=free_port())
    try:
        node.start(timeout=180)
        assert node.is_running()
        status, info = node_mod.http_get_json(node.url, "/")
        assert status == 200 and info["version"]["number"].startswith("2.19.")
        assert info["cluster_name"] == "crm-audit-embedded"
        assert node_mod.cluster_health(node.url)["status"] in ("green", "yellow")
        installed = node.installation()
        assert installed is not None
        assert node_mod.ism_available(node.url) == installed.ism
        # The node runs with the product's JVM options (the tests' own nodes do not).
        arguments = _jvm_arguments(node.url)
        assert set(node_mod.JAVA_OPTS.split()) <= set(arguments)
        assert not any(argument.startswith("-XX:TieredStopAtLevel") for argument in arguments)
        pid = node.running_pid()
        assert pid is not None
        if os.geteuid() == 0:  # OpenSearch refuses root: it runs as the system user
            assert Path(f"/proc/{pid}").stat().st_uid == node_mod.ensure_system_user().pw_uid

        home = str(node.home)
        status_run = _cli("opensearch", "status", "--home", home, env=env)
        assert status_run.returncode == 0, status_run.stderr
        assert f"url: {node.url}" in status_run.stdout
        assert f"pid: {pid}" in status_run.stdout
        again = _cli("opensearch", "start", "--home", home, env=env)
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        node.stop()
    try:
        assert not node.is_running()
        assert not node.pidfile.exists()
        assert node_mod.port_is_free(node.port)
        after = _cli("opensearch", "status", "--home", str(node.home), env=env)
        assert after.returncode == 1 and "not running" in after.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_settings_add_override_and_remove_defaults(tmp_path: Path) -> None:
    text = node_mod.render_config(
        http_port=1,
        transport_port=2,
        data_dir=tmp_path,
        logs_dir=tmp_path,
        ism=False,
        node_name="node-b",
        settings={
            "discovery.type": None,
            "discovery.seed_hosts": ["127.0.0.1:9301", "127.0.0.1:9302"],
            "plugins.security.ssl.http.enabled": True,
            "node.roles": ["data"],
        },
    )
    parsed = yaml.safe_load(text)
    assert "discovery.type" not in parsed
    assert parsed["node.name"] == "node-b"
    assert parsed["network.host"] == "127.0.0.1"
    assert parsed["discovery.seed_hosts"] == ["127.0.0.1:9301", "127.0.0.1:9302"]
    assert parsed["plugins.security.ssl.http.enabled"] is True
    assert parsed["path.data"] == str(tmp_path)


def test_fetch_skips_a_version_lacking_an_extra_plugin(tmp_path: Path) -> None:
    mvn = _fake_mvn(
        tmp_path,
        [
            "org.opensearch.distribution.integ-test-zip:opensearch:2.19.6",
            "org.opensearch.plugin:opensearch-job-scheduler:2.19.6.0",
            "org.opensearch.distribution.integ-test-zip:opensearch:2.19.4",
            "org.opensearch.plugin:opensearch-job-scheduler:2.19.4.0",
            "org.opensearch.plugin:opensearch-security:2.19.4.0",
        ],
    )
    downloads = node_mod.fetch_distribution(
        tmp_path / "cache",
        ["2.19.6", "2.19.4"],
        log=lambda _: None,
        mvn=str(mvn),
        extra_plugins=["opensearch-security"],
    )
    assert downloads.version == "2.19.4"
    assert [(name, path.name) for name, path in downloads.extras] == [
        ("opensearch-security", "opensearch-security-2.19.4.0.zip")
    ]


def test_cli_fetch_of_a_version_with_an_extra_plugin(tmp_path: Path) -> None:
    mvn = _fake_mvn(
        tmp_path,
        [
            "org.opensearch.distribution.integ-test-zip:opensearch:2.19.4",
            "org.opensearch.plugin:opensearch-job-scheduler:2.19.4.0",
            "org.opensearch.plugin:opensearch-security:2.19.4.0",
        ],
    )
    env = {
        "PATH": f"{mvn.parent}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "CRM_AUDIT_CACHE": str(tmp_path / "cache"),
    }
    argv = [str(CLI), "opensearch", "fetch", "--version", "2.19.4", "--plugin"]
    ok = subprocess.run(
        [*argv, "opensearch-security"], env=env, capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert "OpenSearch 2.19.4 + opensearch-security cached in" in ok.stdout
    assert (tmp_path / "cache" / "opensearch-security-2.19.4.0.zip").is_file()
    missing = subprocess.run(
        [*argv, "opensearch-nope"], env=env, capture_output=True, text=True, check=False
    )
    assert missing.returncode == 1
    (line,) = [x for x in missing.stderr.splitlines() if "could not fetch" in x]
    assert "opensearch-nope:2.19.4.0" in line and "Traceback" not in missing.stderr
