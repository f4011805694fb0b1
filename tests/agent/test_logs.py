"""agent.logs: one JSON object per record with extras; key material never shown."""

from __future__ import annotations

import json
import logging

from agent.logs import JsonFormatter, OneLineFormatter

PEM = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----"


def record(message: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("agent.test", logging.WARNING, __file__, 1, message, (), None)
    rec.__dict__.update(extra)
    return rec


def test_json_has_the_fixed_fields_and_extras() -> None:
    out = json.loads(JsonFormatter().format(record("hello\nworld", path="/x", n=3)))
    assert out["level"] == "WARNING" and out["logger"] == "agent.test"
    assert out["message"] == "hello\nworld"
    assert out["time"].endswith("+00:00")
    assert (out["path"], out["n"]) == ("/x", 3)


def test_key_material_is_never_logged() -> None:
    rec = record(f"oops {PEM}", signing_key="abc", private_key_pem=PEM)
    text = JsonFormatter().format(rec)
    assert "MC4CAQ" not in text and "abc" not in text
    out = json.loads(text)
    assert out["signing_key"] == "[redacted]" and out["message"] == "oops [redacted]"
    line = OneLineFormatter("%(message)s").format(record(f"oops {PEM}"))
    assert line == "oops [redacted]"
