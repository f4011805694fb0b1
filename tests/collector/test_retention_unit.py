"""collector.retention: first matching rule wins, default class otherwise; config checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.config import RetentionRule, load_config
from collector.errors import ConfigError
from collector.retention import RetentionRouter
from tests.collector.conftest import Pki, write_config


def doc(
    category: str = "data_operation",
    source: str = "crm",
    fmt: str = "jsonlines",
    action: str = "record.view",
) -> dict[str, Any]:
    return {
        "audit": {"category": category},
        "crm": {"source": {"name": source, "format": fmt}},
        "event": {"action": action},
    }


def rule(cls: str, **conditions: list[str]) -> RetentionRule:
    return RetentionRule.model_validate({"class": cls, **conditions})


ROUTER = RetentionRouter(
    [
        rule("security", audit_category=["security"]),
        rule("payments", source=["pay-*"], action=["record.export", "db.*"]),
        rule("db", format=["pgaudit", "mariadb_audit"]),
        rule("exports", action=["record.export"]),
    ],
    "standard",
)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (doc(category="security", source="pay-eu", action="db.select"), "security"),
        (doc(source="pay-eu", action="db.update"), "payments"),
        (doc(source="pay-eu", action="record.view"), "standard"),
        (doc(source="pay-eu", fmt="pgaudit", action="login"), "db"),
        (doc(action="record.export"), "exports"),
        (doc(source="payroll", action="record.export"), "exports"),  # pay-* != payroll
        (doc(), "standard"),
        ({}, "standard"),
    ],
)
def test_first_match_wins(event: dict[str, Any], expected: str) -> None:
    assert ROUTER.classify(event) == expected


def test_rule_without_conditions_matches_everything() -> None:
    assert RetentionRouter([rule("all")], "standard").classify(doc()) == "all"


def test_glob_is_anchored_and_case_sensitive() -> None:
    router = RetentionRouter([rule("x", action=["record.*"])], "standard")
    assert router.classify(doc(action="record.view")) == "x"
    assert router.classify(doc(action="db.record.view")) == "standard"
    assert router.classify(doc(action="RECORD.view")) == "standard"


def _config(tmp_path: Path, pki: Pki, retention: dict[str, Any]) -> Path:
    path = write_config(tmp_path / "cfg", pki)
    data = yaml.safe_load(path.read_text())
    data["retention"].update(retention)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_config_rules_load(tmp_path: Path, pki: Pki) -> None:
    path = _config(
        tmp_path,
        pki,
        {
            "classes": {
                "standard": {"policy": "opensearch/ism-standard.json"},
                "security": {"policy": "opensearch/ism-standard.json"},
            },
            "rules": [{"class": "security", "audit_category": ["security"]}],
        },
    )
    config = load_config(path)
    router = RetentionRouter.from_config(config.retention)
    assert router.classify(doc(category="security")) == "security"
    assert router.classify(doc()) == "standard"


def test_config_rule_with_unknown_class_is_reported(tmp_path: Path, pki: Pki) -> None:
    path = _config(tmp_path, pki, {"rules": [{"class": "nope", "action": ["login"]}]})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "rules.0.class 'nope' is not one of the classes (standard)" in info.value.problems[0]


def test_config_rule_with_bad_category_or_key_is_reported(tmp_path: Path, pki: Pki) -> None:
    path = _config(
        tmp_path,
        pki,
        {"rules": [{"class": "standard", "audit_category": ["secrity"], "colour": "red"}]},
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = "\n".join(info.value.problems)
    assert "retention.rules.0.audit_category: " in text and "'secrity'" in text
    assert "retention.rules.0.colour: " in text
