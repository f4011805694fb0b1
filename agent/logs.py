"""Log output on stderr: one line per record, as text or as one JSON object.

    text: 2026-11-27 10:00:00,123 INFO agent.runtime: message | folded traceback
    json: {"time": "2026-11-27T10:00:00.123+00:00", "level": "INFO",
           "logger": "agent.runtime", "message": "...", <extra fields>, "exception": "..."}

Extra fields are those passed with `extra={...}`. Key material never reaches the log:
PEM blocks in messages are replaced, and extra fields whose name suggests a secret
(key, secret, password, token) are masked — a guard, since the agent logs only
paths and key ids, never the keys themselves.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(-----END [A-Z0-9 ]+-----|$)", re.DOTALL)
_SECRET_NAME = re.compile(r"(^|_)(key|private|secret|password|passphrase|token)($|_)", re.I)
_MASK = "[redacted]"
# Attributes every LogRecord has: whatever else is on a record came from `extra=`.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def redact(text: str) -> str:
    """`text` with any PEM block replaced."""
    return _PEM.sub(_MASK, text)


class OneLineFormatter(logging.Formatter):
    """Every record on one line: newlines in messages and tracebacks are folded."""

    def format(self, record: logging.LogRecord) -> str:
        text = redact(super().format(record))
        return " | ".join(line for line in text.splitlines() if line.strip())


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name, value in record.__dict__.items():
            if name in _STANDARD or name in out or name.startswith("_"):
                continue
            if _SECRET_NAME.search(name):
                out[name] = _MASK
            elif isinstance(value, str | int | float | bool) or value is None:
                out[name] = redact(value) if isinstance(value, str) else value
            else:
                out[name] = redact(str(value))
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


def setup(fmt: str, level: str) -> None:
    """Send every log record to stderr in `fmt` ("text" or "json") from `level` on."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
