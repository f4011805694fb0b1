from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.parsers import FORMATS, get_parser
from agent.parsers.privacy import PrivacyOptions, Redaction, mask
from proto.v1 import audit_pb2 as pb

IBAN = "DE89370400440532013000"
LINE = (
    "2026-11-27 10:00:00.000 UTC [5] LOG:  AUDIT: SESSION,1,1,WRITE,UPDATE,TABLE,public.c,"
    f"\"UPDATE c SET iban = '{IBAN}', email = 'jo@x.example' WHERE id = 1\",<not logged>,1"
)


def _key(tmp_path: Path) -> Path:
    key = tmp_path / "pseudonym.key"
    key.write_bytes(b"0123456789abcdef-secret")
    return key


def _parse(options: dict[str, object], line: str = LINE) -> pb.AuditEvent:
    model = FORMATS["pgaudit"].options_model.model_validate(options)
    event = get_parser("pgaudit", {}, model)(line.encode())
    assert event is not None
    return event


def test_mask_keeps_the_last_characters() -> None:
    assert mask(IBAN, Redaction(keep_last=4)) == "*" * 18 + "3000"
    assert mask("abc", Redaction(keep_last=4)) == "**c"  # never more than half shown
    assert mask("abc", Redaction()) == "***"


def test_redacted_and_pseudonymized_values_leave_no_trace(tmp_path: Path) -> None:
    event = _parse(
        {
            "privacy": {
                "redact": {"changes.IBAN": {"keep_last": 4}},
                "pseudonymize": {"fields": ["changes.email"], "key_file": str(_key(tmp_path))},
            }
        }
    )
    values = {c.field: c.new_value for c in event.changes}
    assert values["iban"] == "*" * 18 + "3000"
    assert values["email"].startswith("pseudo:") and len(values["email"]) == 7 + 32
    for text in (event.original, event.message, *event.attributes.values()):
        assert IBAN not in text and "jo@x.example" not in text
    again = _parse(
        {
            "privacy": {
                "pseudonymize": {"fields": ["changes.email"], "key_file": str(_key(tmp_path))}
            }
        }
    )
    assert {c.field: c.new_value for c in again.changes}["email"] == values["email"]


def test_pseudonymized_source_ip_moves_to_an_attribute(tmp_path: Path) -> None:
    model = FORMATS["mariadb_audit"].options_model.model_validate(
        {
            "timezone": "UTC",
            "privacy": {
                "pseudonymize": {
                    "fields": ["source.ip", "user.name"],
                    "key_file": str(_key(tmp_path)),
                }
            },
        }
    )
    line = b"20261127 10:00:00,db1,alice,10.0.0.5,3,0,CONNECT,crm,,0"
    event = get_parser("mariadb_audit", {}, model)(line)
    assert event is not None and not event.source.ip
    assert event.attributes["source.ip"].startswith("pseudo:")
    assert "10.0.0.5" not in event.original and "alice" not in event.original


def test_privacy_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"unknown field 'usr\.name'"):
        PrivacyOptions.model_validate({"redact": {"usr.name": {}}})
    short = tmp_path / "short.key"
    short.write_bytes(b"short")
    with pytest.raises(ValidationError, match="key shorter than 16 bytes") as info:
        PrivacyOptions.model_validate(
            {"pseudonymize": {"fields": ["user.name"], "key_file": str(short)}}
        )
    assert "short" not in str(info.value).split("bytes:")[0].split("shorter")[0]
    with pytest.raises(ValidationError, match="both redacted and pseudonymized"):
        PrivacyOptions.model_validate(
            {
                "redact": {"user.name": {}},
                "pseudonymize": {"fields": ["user.name"], "key_file": str(_key(tmp_path))},
            }
        )


def test_relative_key_file_resolves_against_the_config_dir(tmp_path: Path) -> None:
    _key(tmp_path)
    options = PrivacyOptions.model_validate(
        {"pseudonymize": {"fields": ["user.name"], "key_file": "pseudonym.key"}},
        context={"config_dir": tmp_path},
    )
    assert options.pseudonymize is not None
    assert options.pseudonymize.key_file == tmp_path / "pseudonym.key"
