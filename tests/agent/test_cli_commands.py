"""`crm-audit-agent key` and `crm-audit-agent parse` as real processes."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from agent.sealing import KEY_FILE, PUBLIC_KEY_FILE
from proto import integrity
from tests.agent.certs import make_pki

CLI = Path(sys.executable).parent / "crm-audit-agent"


def write_config(tmp_path: Path) -> Path:
    make_pki(tmp_path / "pki")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        """agent_id: crm-host-1
state_dir: state
collector:
  endpoint: "127.0.0.1:4317"
  tls: {ca: pki/ca.crt, cert: pki/agents/crm-host-1.crt, key: pki/agents/crm-host-1.key}
sources:
  - {name: crm_app, format: jsonlines, paths: ["logs/*.jsonl"]}
  - {name: other, format: jsonlines, paths: ["other/*.jsonl"]}
""",
        encoding="utf-8",
    )
    return cfg


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=60)


def test_key_creates_the_key_once_and_prints_path_and_id(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    first = cli("key", "-c", str(cfg))
    assert first.returncode == 0, first.stderr
    public = tmp_path / "state" / PUBLIC_KEY_FILE
    (key,) = integrity.load_public_keys(public.read_bytes())
    lines = first.stdout.splitlines()
    assert lines[0] == f"public key: {public}"
    assert lines[1] == f"key id: {integrity.key_id(key)}"
    assert f"crm-audit keys register KEYS_DIR crm-host-1 {public}" in lines[2]
    assert stat.S_IMODE((tmp_path / "state" / KEY_FILE).stat().st_mode) == 0o600
    again = cli("key", "-c", str(cfg))
    assert again.returncode == 0 and again.stdout == first.stdout  # same key, not a new one


def test_key_refuses_a_key_readable_by_others(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    assert cli("key", "-c", str(cfg)).returncode == 0
    (tmp_path / "state" / KEY_FILE).chmod(0o644)
    result = cli("key", "-c", str(cfg))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "chmod 600" in result.stderr and len(result.stderr.splitlines()) == 1


def test_parse_prints_events_and_writes_no_state(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.jsonl").write_text(
        '{"event": "login", "user": {"name": "ann"}}\nnot json\n', encoding="utf-8"
    )
    result = cli("parse", "-c", str(cfg), "--source", "crm_app")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e.get("action") for e in events] == ["login", None]
    assert events[0]["user"]["name"] == "ann" and events[1]["flags"] == ["parse_error"]
    assert "crm_app: 2 events (1 with parse_error) from 1 files" in result.stderr
    assert not (tmp_path / "state").exists()

    # Explicit files with one source's settings.
    extra = tmp_path / "extra.jsonl"
    extra.write_text('{"event": "logout"}\n', encoding="utf-8")
    result = cli("parse", "-c", str(cfg), "--source", "other", str(extra))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["action"] == "logout"


def test_parse_user_mistakes_exit_2_in_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    unknown = cli("parse", "-c", str(cfg), "--source", "nope")
    assert unknown.returncode == 2 and "unknown source 'nope'" in unknown.stderr
    ambiguous = cli("parse", "-c", str(cfg), str(cfg))
    assert ambiguous.returncode == 2 and "--source" in ambiguous.stderr
    missing = cli("parse", "-c", str(cfg), "--source", "crm_app", str(tmp_path / "no.jsonl"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    for result in (unknown, ambiguous, missing):
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
