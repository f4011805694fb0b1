"""scripts/install.sh (`make install`) staged into a DESTDIR, as a package build would.

With DESTDIR no user is created, nothing is chowned and systemctl is not called, so the
test needs no root and changes nothing outside its tmp dir. The layout run uses
SKIP_VENV=1 (files only, well under a second); one run builds the real virtualenv
(about 20 s here with a warm pip cache) and runs the installed console scripts.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.helpers import cargo_installed

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "install.sh"


def _run_install(destdir: Path, timeout: int, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, "DESTDIR": str(destdir), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _install(destdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    result = _run_install(destdir, 300, **env)
    assert result.returncode == 0, result.stderr
    return result


def _refused(destdir: Path, **env: str) -> str:
    """The error output of an install refused (exit 1) before it staged anything."""
    result = _run_install(destdir, 60, SKIP_VENV="1", **env)
    assert result.returncode == 1
    return result.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_layout_permissions_and_idempotence(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    first = _install(dest, SKIP_VENV="1")
    etc = dest / "etc" / "crm-audit"
    assert _mode(etc) == 0o750
    for name in ("agent.yaml", "collector.yaml", "rules.yaml", "opensearch/ism-standard.json"):
        assert _mode(etc / name) == 0o640, name
    assert (etc / "keys").is_dir()
    # The installed collector.yaml points at /etc/crm-audit and the state dir, not ../var.
    collector = (etc / "collector.yaml").read_text()
    assert "../var" not in collector
    assert "  ca: pki/ca.crt" in collector
    assert "checkpoint_dir: /var/lib/crm-audit/collector/checkpoints" in collector
    state = dest / "var" / "lib" / "crm-audit"
    assert _mode(state / "agent") == 0o700 and _mode(state / "collector") == 0o700
    prefix = dest / "opt" / "crm-audit"
    assert (prefix / "README.md").read_bytes() == (REPO / "README.md").read_bytes()
    share = prefix / "share" / "crm-audit"
    assert (share / "dashboards" / "crm-audit.ndjson").is_file()
    assert (share / "examples" / "collector.yaml").read_bytes() == (
        REPO / "config" / "collector.yaml"
    ).read_bytes()
    assert (share / "docs" / "operations.md").is_file()
    units = dest / "etc" / "systemd" / "system"
    for name in ("crm-audit-agent.service", "crm-audit-collector.service"):
        assert (units / name).read_bytes() == (REPO / "systemd" / name).read_bytes()
        assert _mode(units / name) == 0o644
    assert "daemon-reload" not in first.stdout  # never from a DESTDIR build

    # Again, after the operator edited a config: the config stays, the rest is refreshed.
    (etc / "agent.yaml").write_text("agent_id: edited\n")
    (units / "crm-audit-agent.service").write_text("stale")
    second = _install(dest, SKIP_VENV="1")
    assert (etc / "agent.yaml").read_text() == "agent_id: edited\n"
    assert (units / "crm-audit-agent.service").read_bytes() == (
        REPO / "systemd" / "crm-audit-agent.service"
    ).read_bytes()
    assert "created" not in second.stdout


def test_other_prefix_is_written_into_the_units(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    _install(dest, SKIP_VENV="1", PREFIX="/usr/local/crm-audit")
    unit = (dest / "etc" / "systemd" / "system" / "crm-audit-collector.service").read_text()
    assert "/opt/crm-audit" not in unit
    assert "ExecStart=/usr/local/crm-audit/bin/crm-audit-collector run" in unit
    assert "Documentation=file:/usr/local/crm-audit/README.md" in unit
    assert (dest / "usr" / "local" / "crm-audit" / "README.md").is_file()


def test_relative_prefix_is_refused(tmp_path: Path) -> None:
    stderr = _refused(tmp_path, PREFIX="opt")
    assert stderr == "install: error: PREFIX must be an absolute path, got 'opt'\n"


@pytest.mark.integration
def test_real_virtualenv_runs_from_the_staged_prefix(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    _install(dest)
    prefix = dest / "opt" / "crm-audit"
    # Scripts are rewritten to run from PREFIX, where the package will be unpacked.
    script = prefix / "bin" / "crm-audit-collector"
    assert script.read_text().splitlines()[0] == "#!/opt/crm-audit/bin/python"
    assert str(dest) not in (prefix / "pyvenv.cfg").read_text()

    # The staged interpreter works in place; run the installed entry points through it.
    def staged_python(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(prefix / "bin" / "python"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,  # not the checkout: the import must come from the venv
        )

    for module in ("collector.cli", "agent.cli"):
        result = staged_python("-m", module, "--help")
        assert result.returncode == 0, result.stderr
        assert "check" in result.stdout
    located = staged_python("-c", "import collector; print(collector.__file__)")
    assert located.stdout.startswith(str(prefix / "lib")), located
    # The collector's compiled kernel is built into it where cargo is installed.
    if cargo_installed():
        kernel = staged_python("-c", "import crm_audit_native")
        assert kernel.returncode == 0, kernel.stderr
    # A second run upgrades in place and keeps working.
    _install(dest)
    assert (prefix / "bin" / "crm-audit").is_file()


def test_agent_role_lays_out_only_the_agent(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    result = _install(dest, SKIP_VENV="1", ROLE="agent")
    etc = dest / "etc" / "crm-audit"
    assert (etc / "agent.yaml").is_file()
    assert not (etc / "collector.yaml").exists() and not (etc / "rules.yaml").exists()
    assert list((etc / "opensearch").iterdir()) == []
    units = dest / "etc" / "systemd" / "system"
    assert sorted(p.name for p in units.iterdir()) == ["crm-audit-agent.service"]
    state = dest / "var" / "lib" / "crm-audit"
    assert sorted(p.name for p in state.iterdir()) == ["agent"]
    assert "crm-audit-collector" not in result.stdout


def test_unknown_role_is_refused(tmp_path: Path) -> None:
    stderr = _refused(tmp_path, ROLE="agnet")
    assert stderr == "install: error: ROLE must be agent, collector or all, got 'agnet'\n"


@pytest.mark.integration
def test_agent_only_virtualenv_has_no_collector_libraries(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    _install(dest, ROLE="agent")
    python = dest / "opt" / "crm-audit" / "bin" / "python"
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    installed = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert "crm-audit" in installed and "grpcio" in installed
    for name in ("opensearch-py", "matplotlib", "numpy", "pillow", "fonttools"):
        assert name not in installed, name

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )

    assert run("-m", "agent.cli", "--help").returncode == 0
    if cargo_installed():  # the agent's compiled JSON-lines kernel is built here too
        kernel = run("-c", "import agent.native as n; print(n.DESCRIPTION)")
        assert kernel.returncode == 0, kernel.stderr
        assert "mapped by crm_audit_native" in kernel.stdout
    # A collector-only command says what is missing instead of a traceback.
    refused = run("-m", "collector.admin.cli", "verify", "--opensearch", "http://127.0.0.1:9")
    assert refused.returncode == 2
    assert "install crm-audit[collector]" in refused.stderr
    assert "Traceback" not in refused.stderr
