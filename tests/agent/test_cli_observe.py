"""Observability and reload of a real `crm-audit-agent run` process against the in-test
mTLS collector: Prometheus metrics scraped over HTTP, JSON logs, `status` on the state
directory the run produced, SIGHUP with a bad and a good config."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.agent.certs import make_pki
from tests.agent.fake_collector import FakeCollector, Server, events
from tests.helpers import free_port

CLI = Path(sys.executable).parent / "crm-audit-agent"


def config_text(port: int, metrics_port: int, sources: str, extra: str = "") -> str:
    return f"""
agent_id: crm-host-1
state_dir: state
collector:
  endpoint: "127.0.0.1:{port}"
  server_name: localhost
  tls: {{ca: pki/ca.crt, cert: pki/agents/crm-host-1.crt, key: pki/agents/crm-host-1.key}}
  retry: {{initial_s: 0.05, max_s: 0.2}}
batch: {{max_events: 10, max_wait_s: 0.1}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
{extra}
sources:
{sources}
"""


APP = '  - {name: crm_app, format: jsonlines, paths: ["logs/*.jsonl"], poll_interval_s: 0.05}'
EXTRA = '  - {name: extra, format: jsonlines, paths: ["extra/*.jsonl"], poll_interval_s: 0.05}'


class Running:
    """The agent process with its stderr collected line by line in a thread."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._collect)
        self._reader.start()

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def wait_log(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.lines):
                return
            assert self.process.poll() is None, "".join(self.lines)
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged:\n{''.join(self.lines)}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join()
        if self.process.stderr is not None:
            self.process.stderr.close()
        return self.process.returncode


@pytest.fixture
def running() -> Iterator[list[Running]]:
    made: list[Running] = []
    yield made
    for r in made:
        r.stop()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def shipped(collector: FakeCollector) -> list[tuple[str, str]]:
    with collector.cond:
        return [(e.log.source_name, e.original) for b in collector.received for e in events(b)]


def test_metrics_json_logs_and_status(tmp_path: Path, running: list[Running]) -> None:
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "logs").mkdir()
    lines = [json.dumps({"event": "record.view", "n": i}) for i in range(30)] + ["not json"]
    log_file = tmp_path / "logs" / "app.jsonl"
    log_file.write_text("\n".join(lines) + "\n")
    collector = FakeCollector()
    metrics_port = free_port()
    with Server(collector, pki) as server:
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(config_text(server.port, metrics_port, APP))
        agent = Running([str(CLI), "run", "-c", str(cfg), "--log-format", "json"])
        running.append(agent)
        collector.wait_for(lambda: sum(len(events(b)) for b in collector.received) >= 31)
        agent.wait_log("metrics on http://127.0.0.1")
        ns = "crm_audit_agent_"
        src = (("source", "crm_app"),)
        deadline = time.monotonic() + 30
        while True:
            m = scrape(metrics_port)
            if m.get((ns + "events_acked_total", ())) == 31 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert m[(ns + "lines_read_total", src)] == 31
        assert m[(ns + "events_spooled_total", src)] == 31
        assert m[(ns + "parse_errors_total", src)] == 1
        assert m[(ns + "events_acked_total", ())] == 31
        assert m[(ns + "events_sent_total", ())] >= 31
        assert m[(ns + "batches_acked_total", ())] >= 4
        assert m[(ns + "files_watched", src)] == 1
        assert m[(ns + "next_sequence", ())] == 32
        assert m[(ns + "acked_sequence", ())] == 31
        assert m[(ns + "spool_unacked_events", ())] == 0
        assert m[(ns + "spool_segments", ())] >= 1
        assert m[(ns + "spool_bytes", ())] > 0
        assert m[(ns + "batches_in_flight", ())] == 0
        assert 0 <= m[(ns + "last_ack_age_seconds", ())] < 600
        endpoint = f"127.0.0.1:{server.port}"
        state = ns + "collector_connection_state"
        assert m[(state, (("endpoint", endpoint), ("state", "connected")))] == 1
        assert m[(state, (("endpoint", endpoint), ("state", "failing")))] == 0
        # `status` while the agent runs: the state on disk plus live numbers.
        live = subprocess.run(
            [str(CLI), "status", "-c", str(cfg), "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert live.returncode == 0, live.stderr
        assert json.loads(live.stdout)["live"]["connections"] == {endpoint: "connected"}
        assert agent.stop() == 0
    # Every log line is one JSON object with the fixed fields.
    records = [json.loads(line) for line in agent.lines]
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert not any("PRIVATE KEY" in line for line in agent.lines)

    result = subprocess.run(
        [str(CLI), "status", "-c", str(cfg), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    size = log_file.stat().st_size
    assert status["next_sequence"] == 32 and status["acked_sequence"] == 31
    assert status["spool"]["unacked_records"] == 0
    # The stream head is saved with the acked watermark (31) and is a real head.
    assert status["stream_id"] and len(bytes.fromhex(status["acked_head"])) == 32
    assert status["last_ack_time"] is not None
    assert status["live"] is None  # the agent is stopped
    (f,) = status["files"]
    assert (f["source"], f["path"], f["offset"], f["acked_offset"]) == (
        "crm_app",
        str(log_file),
        size,
        size,
    )
    assert (f["size"], f["lag_bytes"]) == (size, 0)
    # Lines appended while the agent is down show up as lag.
    with log_file.open("a") as out:
        out.write('{"event": "login"}\n')
    text = subprocess.run(
        [str(CLI), "status", "-c", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert text.returncode == 0, text.stderr
    assert "last acked 31" in text.stdout
    row = next(line for line in text.stdout.splitlines() if str(log_file) in line)
    assert row.split()[2:6] == [str(size), str(size), str(size + 19), "19"]


def test_status_exit_codes(tmp_path: Path) -> None:
    make_pki(tmp_path / "pki")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(config_text(4317, 0, APP))
    result = subprocess.run(
        [str(CLI), "status", "-c", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "no state yet" in result.stdout
    cfg.write_text(config_text(4317, 0, APP, extra="bogus: 1"))
    result = subprocess.run(
        [str(CLI), "status", "-c", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "bogus" in result.stderr and "Traceback" not in result.stderr


def test_sighup_rejects_a_bad_config_and_applies_a_good_one(
    tmp_path: Path, running: list[Running]
) -> None:
    pki = make_pki(tmp_path / "pki")
    for d in ("logs", "extra"):
        (tmp_path / d).mkdir()
    (tmp_path / "logs" / "app.jsonl").write_text('{"event": "login", "n": 1}\n')
    (tmp_path / "extra" / "x.jsonl").write_text('{"event": "login", "n": 2}\n')
    collector = FakeCollector()
    with Server(collector, pki) as server:
        cfg = tmp_path / "agent.yaml"
        cfg.write_text(config_text(server.port, 0, APP))
        agent = Running([str(CLI), "run", "-c", str(cfg)])
        running.append(agent)
        collector.wait_for(lambda: len(shipped(collector)) >= 1)
        # Two problems: both logged, one line each; the agent runs on.
        cfg.write_text(config_text(server.port, 0, APP, extra="bogus: 1\nspool: {max_bytes: 1}"))
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_log("config reload rejected (")
        rejected = [line for line in agent.lines if "config reload rejected:" in line]
        assert len(rejected) >= 2, agent.lines
        with (tmp_path / "logs" / "app.jsonl").open("a") as out:
            out.write('{"event": "login", "n": 3}\n')
        collector.wait_for(lambda: len(shipped(collector)) >= 2)
        # A good config: a source added, the endpoint list changed (restart needed).
        cfg.write_text(
            config_text(server.port, 0, APP + "\n" + EXTRA).replace(
                f'endpoint: "127.0.0.1:{server.port}"',
                f'endpoints: ["127.0.0.1:{server.port}", "127.0.0.1:1"]',
            )
        )
        agent.process.send_signal(signal.SIGHUP)
        agent.wait_log("config reloaded: added: extra")
        collector.wait_for(lambda: ("extra", '{"event": "login", "n": 2}') in shipped(collector))
        assert any("takes effect at the next restart" in line for line in agent.lines)
        assert agent.stop() == 0
    got = shipped(collector)
    assert sorted(n for _, n in got) == sorted(
        ['{"event": "login", "n": 1}', '{"event": "login", "n": 2}', '{"event": "login", "n": 3}']
    )
    assert "Traceback" not in "".join(agent.lines)


def test_check_print_shows_the_effective_config_with_secrets_masked(tmp_path: Path) -> None:
    make_pki(tmp_path / "pki")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        config_text(4317, 9465, APP).replace("server_name: localhost", "server_name: ${TLS_NAME}")
    )
    result = subprocess.run(
        [str(CLI), "check", "-c", str(cfg), "--print"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TLS_NAME": "localhost-secret-name", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "localhost-secret-name" not in result.stdout
    assert "server_name: '********'" in result.stdout or "server_name: ********" in result.stdout
    assert "listen: 127.0.0.1:9465" in result.stdout
    assert "format: text" in result.stdout  # defaults filled in
    assert result.stdout.rstrip().endswith("collectors 127.0.0.1:4317)")
