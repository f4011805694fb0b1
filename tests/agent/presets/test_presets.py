"""Each preset in config/presets parses its vendor's documented sample lines through the
real config loader and parser: 0 mapping errors, 0 unknown actions, and the fields an
analyst searches on (action, outcome, user, object, changes) filled as documented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import SourceConfig, load_config_and_secrets
from agent.parse_command import parse_file
from agent.parsers.mapping.compile import count_failed_targets
from proto.v1 import audit_pb2 as pb

ROOT = Path(__file__).resolve().parents[3]
PRESETS = ROOT / "config" / "presets"
SAMPLES = Path(__file__).parent / "samples"


def _source(tmp_path: Path, vendor: str) -> SourceConfig:
    """The preset as a source of a complete agent config, loaded like `parse` loads it."""
    preset: dict[str, Any] = yaml.safe_load((PRESETS / f"{vendor}.yaml").read_text())
    preset["paths"] = [str(SAMPLES / f"{vendor}.jsonl")]
    config = {
        "agent_id": "crm-host-1",
        "state_dir": str(tmp_path / "state"),
        "collector": {
            "endpoint": "127.0.0.1:4317",
            "tls": {"ca": "none.crt", "cert": "none.crt", "key": "none.key"},
        },
        "sources": [preset],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    loaded, _ = load_config_and_secrets(path, {}, tls_files=False)
    return loaded.sources[0]


def _events(tmp_path: Path, vendor: str) -> list[pb.AuditEvent]:
    src = _source(tmp_path, vendor)
    with count_failed_targets() as failed:
        events = parse_file(
            Path(src.paths[0]), src.format, src.mapping, src.parsed_options(), src.name, src.actions
        )
    assert failed == {}, f"mapping errors by field: {dict(failed)}"
    for event in events:
        assert "unknown_action" not in event.flags, event.action
        assert list(event.flags) == [], (event.flags, event.original)
        assert event.time_unix_nano > 0
    return events


def test_every_preset_has_samples_and_a_source_note() -> None:
    presets = sorted(p.stem for p in PRESETS.glob("*.yaml"))
    assert len(presets) >= 3
    readme = (SAMPLES / "README.md").read_text()
    for vendor in presets:
        assert (SAMPLES / f"{vendor}.jsonl").is_file()
        assert f"{vendor}.jsonl" in readme


def test_hubspot(tmp_path: Path) -> None:
    pipeline, login_audit, login, add_user = _events(tmp_path, "hubspot")
    assert pipeline.action == "settings.pipeline.update"
    assert pipeline.audit_category == pb.AUDIT_CATEGORY_SYSTEM_ADMIN
    assert (pipeline.user.id, pipeline.user.email) == ("89274502", "mark.scout@lumonindustries.com")
    assert (pipeline.object.type, pipeline.object.id) == ("DEAL", "Sales Pipeline")
    assert login_audit.action == "login" and login_audit.user.email == "pgibbons@initech.com"
    assert (login.action, login.outcome) == ("login", pb.OUTCOME_SUCCESS)
    assert (login.source.ip, login.user.id) == ("45.56.67.89", "876")
    assert login.source.user_agent.startswith("Mozilla/5.0")
    assert add_user.action == "user.create" and add_user.user.email == "person3@testdomain.com"
    assert (add_user.object.type, add_user.object.id) == ("user", "7654")


def test_servicenow(tmp_path: Path) -> None:
    assign, phone, grant = _events(tmp_path, "servicenow")
    assert (assign.action, assign.user.name, assign.object.type) == (
        "record.update",
        "abel.tuter",
        "incident",
    )
    assert assign.object.id == "9d385017c611228701d22104cc95c371"
    (change,) = phone.changes
    assert (change.field, change.old_value, change.new_value) == (
        "phone",
        "+1 858 287 7834",
        "+1 858 555 0199",
    )
    assert assign.changes[0].HasField("old_value") and assign.changes[0].old_value == ""
    assert grant.action == "role.grant" and grant.audit_category == pb.AUDIT_CATEGORY_SYSTEM_ADMIN
    assert grant.target_user.id == "a8f98bb0eb32010045e1a5115206fe3a"
    assert phone.time_unix_nano == 1_772_356_590 * 10**9  # 2026-03-01 09:16:30 UTC


def test_dataverse(tmp_path: Path) -> None:
    update, create, access, delete = _events(tmp_path, "dataverse")
    assert (update.action, update.object.type) == ("record.update", "account")
    assert (update.user.id, update.user.name) == (
        "f1c2d3e4-5a6b-ef11-8e4e-000d3a5b1c2d",
        "Nancy Anderson",
    )
    assert not update.effective_user.id  # no impersonation: the calling user is null
    assert "changedata" in update.attributes
    # impersonation: the integration service acted as Nancy Anderson
    assert (create.action, create.user.name) == ("record.create", "Integration Service")
    assert create.effective_user.name == "Nancy Anderson"
    assert access.action == "login" and access.audit_category == pb.AUDIT_CATEGORY_SECURITY
    assert delete.action == "record.delete" and delete.object.type == "contact"


@pytest.mark.parametrize("vendor", ["hubspot", "servicenow", "dataverse"])
def test_preset_validates_with_check(tmp_path: Path, vendor: str) -> None:
    assert _source(tmp_path, vendor).actions
