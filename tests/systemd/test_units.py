"""The shipped unit files: valid for systemd, and as locked down as the README says."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from proto.sdnotify import Notifier

REPO = Path(__file__).resolve().parents[2]
UNITS = sorted((REPO / "systemd").glob("*.service"))
DAEMONS = [u for u in UNITS if u.name != "crm-audit-retention.service"]
RETENTION = REPO / "systemd" / "crm-audit-retention.service"
TIMER = REPO / "systemd" / "crm-audit-retention.timer"
VENV_BIN = Path(sys.executable).parent

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "UMask": "0077",
    "CapabilityBoundingSet": "",
}
REQUIRED = {"Type": "notify", "Restart": "on-failure", **HARDENING}


def _service_section(unit: Path, wanted: str = "Service") -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == wanted:
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def _installed_copy(unit: Path, directory: Path) -> Path:
    # The units name /opt/crm-audit/bin (the package layout); point them at this venv
    # so that systemd-analyze can check that the executables exist.
    text = unit.read_text().replace("/opt/crm-audit/bin", str(VENV_BIN))
    copy = directory / unit.name
    copy.write_text(text)
    return copy


def test_the_units_exist() -> None:
    assert [u.name for u in UNITS] == [
        "crm-audit-agent.service",
        "crm-audit-collector.service",
        "crm-audit-retention.service",
    ]
    assert TIMER.is_file()


def _assert_hardened(unit: Path, required: dict[str, str]) -> dict[str, list[str]]:
    service = _service_section(unit)
    for key, value in required.items():
        assert service.get(key) == [value], f"{unit.name}: {key}={service.get(key)}"
    assert service["User"] == ["crm-audit"]
    assert any("check -c" in v for v in service["ExecStartPre"])
    families = service["RestrictAddressFamilies"][0].split()
    assert set(families) <= {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert service["SystemCallFilter"][0] == "@system-service"
    return service


@pytest.mark.parametrize("unit", DAEMONS, ids=lambda u: u.name)
def test_unit_is_hardened(unit: Path) -> None:
    assert "WatchdogSec" in _assert_hardened(unit, REQUIRED)


def test_retention_unit_is_a_hardened_oneshot_of_its_own_config() -> None:
    service = _assert_hardened(RETENTION, {"Type": "oneshot", **HARDENING})
    config = "-c /etc/crm-audit/retention.yaml"
    assert service["ExecStart"] == [
        f"/opt/crm-audit/bin/crm-audit-collector retention run {config}"
    ]
    assert service["ExecStartPre"] == [f"/opt/crm-audit/bin/crm-audit-collector check {config}"]
    # The collector's state: its key signs the records, its checkpoint dir holds them.
    assert (
        service["StateDirectory"]
        == _service_section(REPO / "systemd" / "crm-audit-collector.service")["StateDirectory"]
    )
    timer = _service_section(TIMER, "Timer")
    assert timer["Unit"] == [RETENTION.name] and timer["Persistent"] == ["yes"]


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (Debian package systemd)",
)
@pytest.mark.parametrize("unit", [*UNITS, TIMER], ids=lambda u: u.name)
def test_systemd_analyze_verify_passes(unit: Path, tmp_path: Path) -> None:
    copy = _installed_copy(unit, tmp_path)
    if unit == TIMER:  # verify checks the unit the timer starts, beside it
        _installed_copy(RETENTION, tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_notifier_sends_datagrams_to_the_notify_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        notifier = Notifier.from_env(
            {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42
        )
        assert notifier.watchdog_interval_s == 15.0
        assert notifier.ready("serving")
        assert server.recv(1024) == b"READY=1\nSTATUS=serving"
        assert notifier.watchdog()
        assert server.recv(1024) == b"WATCHDOG=1"


def test_notifier_is_a_no_op_outside_systemd() -> None:
    notifier = Notifier.from_env({}, 1)
    assert not notifier.enabled and not notifier.ready() and notifier.watchdog_interval_s is None
    # A watchdog meant for another process is not ours to feed.
    assert (
        Notifier.from_env({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "7"}, 8).watchdog_interval_s
        is None
    )
