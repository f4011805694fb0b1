from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.parsers import get_parser
from agent.parsers.regex import RegexOptions
from proto.v1 import audit_pb2 as pb

PATTERN = (
    r"(?P<ts>\S+ \S+) \[(?P<user_name>[^\]]+)\] (?P<action>\S+) (?P<outcome>\w+) "
    r"ip=(?P<source_ip>\S+) obj=(?P<object_id>\S+)(?: tenant=(?P<tenant>\S+))?"
)


def test_named_groups_fill_schema_fields_and_the_rest_become_attributes() -> None:
    options = RegexOptions(
        pattern=PATTERN, timestamp_format="%d/%m/%Y %H:%M:%S", timezone="Europe/Berlin"
    )
    parse = get_parser("regex", {"timestamp": "ts"}, options)
    event = parse(
        b"27/11/2026 10:00:00 [jdoe] record.export success ip=192.0.2.4 obj=C-1 tenant=emea"
    )
    assert event is not None
    assert (event.user.name, event.action, event.outcome, event.source.ip, event.object.id) == (
        "jdoe",
        "record.export",
        pb.OUTCOME_SUCCESS,
        "192.0.2.4",
        "C-1",
    )
    assert event.time_unix_nano == 1795770000 * 10**9
    assert event.audit_category == pb.AUDIT_CATEGORY_DATA_OPERATION
    assert event.attributes["tenant"] == "emea"
    bad = parse(b"something else")
    assert bad is not None and "parse_error" in bad.flags


def test_options_are_validated() -> None:
    with pytest.raises(ValidationError, match="no named groups"):
        RegexOptions(pattern=r"(\d+)")
    with pytest.raises(ValidationError, match="invalid regular expression"):
        RegexOptions(pattern=r"(?P<a>")
    with pytest.raises(ValidationError, match="set timezone"):
        RegexOptions(pattern=PATTERN, timestamp_format="%Y")
