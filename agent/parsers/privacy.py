"""Per-source redaction and keyed pseudonymization of event fields, applied on the agent.

Configured in a source's options (every format accepts it):

    options:
      privacy:
        redact:
          changes.iban: {keep_last: 4}   # "DE89370400440532013000" -> "******************3000"
          user.email: {}                 # fully masked
        pseudonymize:
          fields: [user.name, source.ip]
          key_file: /etc/crm-audit/pseudonym.key   # >= 16 bytes, kept on the host

Field names are schema fields (`user.id`, `user.name`, `user.email`, `source.ip`,
`source.device_id`, `source.user_agent`, `session_id`, `object.id`, `object.name`,
`message`), `changes.<field>` (old and new value of that changed field; `changes.*` for
all) or `attributes.<key>`. A pseudonym is `pseudo:` + the first 32 hex digits of
HMAC-SHA256(key, value): stable, so one person's events still correlate, but not
reversible without the key. Because the raw line travels as `original` (and may repeat
in `message` and attributes), every raw value replaced is also replaced wherever it
occurs there, in its plain, SQL-escaped, CSV- and JSON-escaped spellings: raw values
of the configured fields never leave the host.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from proto.v1 import audit_pb2 as pb

_SCALARS = {
    "user.id": ("user", "id"),
    "user.name": ("user", "name"),
    "user.email": ("user", "email"),
    "source.ip": ("source", "ip"),
    "source.device_id": ("source", "device_id"),
    "source.user_agent": ("source", "user_agent"),
    "session_id": ("", "session_id"),
    "object.id": ("object", "id"),
    "object.name": ("object", "name"),
    "message": ("", "message"),
}
MIN_KEY_BYTES = 16
PSEUDONYM_PREFIX = "pseudo:"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _field_name(name: str) -> str:
    if name in _SCALARS:
        return name
    for prefix in ("changes.", "attributes."):
        if name.startswith(prefix) and len(name) > len(prefix):
            return name
    known = ", ".join([*_SCALARS, "changes.<field>", "changes.*", "attributes.<key>"])
    raise ValueError(f"unknown field {name!r} (known: {known})")


class Redaction(_Model):
    """Mask a value, keeping its last `keep_last` characters."""

    # How many trailing characters stay readable (e.g. 4 for the end of an IBAN).
    keep_last: int = Field(0, ge=0, le=64)
    # The character that replaces each hidden one.
    mask_char: str = Field("*", min_length=1, max_length=1)


class Pseudonymization(_Model):
    """Replace values by a keyed HMAC-SHA256 pseudonym; the key file stays on the host."""

    # Fields to replace by `pseudo:` + HMAC (same names as for `redact`).
    fields: list[str] = Field(min_length=1)
    # Secret key of at least 16 bytes, kept on the host (relative to the config file).
    key_file: Path
    _key: bytes = PrivateAttr(default=b"")

    @field_validator("fields")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        return [_field_name(v) for v in value]

    @field_validator("key_file")
    @classmethod
    def _resolve(cls, value: Path, info: ValidationInfo) -> Path:
        base = Path((info.context or {}).get("config_dir", "."))
        return value if value.is_absolute() else base / value

    @model_validator(mode="after")
    def _load_key(self) -> Pseudonymization:
        path = self.key_file
        if not path.is_file():
            raise ValueError(f"key_file: file not found: {path}")
        if not os.access(path, os.R_OK):
            raise ValueError(f"key_file: not readable: {path}")
        key = path.read_bytes().strip()
        if len(key) < MIN_KEY_BYTES:
            # Never echo the content: it is key material.
            raise ValueError(f"key_file: key shorter than {MIN_KEY_BYTES} bytes: {path}")
        self._key = key
        return self

    def pseudonym(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).hexdigest()
        return PSEUDONYM_PREFIX + digest[:32]


class PrivacyOptions(_Model):
    """What to hide before an event leaves the host. Each raw value replaced is also
    replaced wherever it occurs in `original`, `message` and attributes (plain, SQL-,
    CSV- and JSON-escaped), so raw values of the configured fields never leave the host."""

    # Field → masking: schema fields (user.name, source.ip, object.name, message, …),
    # `changes.<field>` / `changes.*` (old and new values), `attributes.<key>`.
    redact: dict[str, Redaction] = {}
    # Keyed pseudonyms: stable (events still correlate), not reversible without the key.
    pseudonymize: Pseudonymization | None = None

    @field_validator("redact")
    @classmethod
    def _known(cls, value: dict[str, Redaction]) -> dict[str, Redaction]:
        for name in value:
            _field_name(name)
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> PrivacyOptions:
        both = set(self.redact) & set(self.pseudonymize.fields if self.pseudonymize else [])
        if both:
            raise ValueError(f"fields both redacted and pseudonymized: {sorted(both)}")
        return self


def mask(value: str, rule: Redaction) -> str:
    keep = min(rule.keep_last, len(value) // 2) if rule.keep_last else 0
    return rule.mask_char * (len(value) - keep) + (value[len(value) - keep :] if keep else "")


def apply(event: pb.AuditEvent, options: PrivacyOptions) -> pb.AuditEvent:
    """Redact / pseudonymize the configured fields of `event` in place; returns it."""
    rules: dict[str, Any] = dict(options.redact)
    pseudo = options.pseudonymize
    if pseudo is not None:
        rules.update(dict.fromkeys(pseudo.fields, pseudo))
    if not rules:
        return event
    replaced: dict[str, str] = {}

    def hide(name: str, value: str) -> str:
        if not value:
            return value
        rule = rules[name]
        new = rule.pseudonym(value) if isinstance(rule, Pseudonymization) else mask(value, rule)
        replaced[value] = new
        return new

    for name in rules:
        if name in _SCALARS:
            holder_name, attr = _SCALARS[name]
            holder: Any = getattr(event, holder_name) if holder_name else event
            value = getattr(holder, attr)
            if name == "source.ip" and value:
                # A pseudonym is no IP address: it moves to an attribute.
                holder.ip = ""
                event.attributes["source.ip"] = hide(name, value)
            else:
                setattr(holder, attr, hide(name, value))
        elif name.startswith("attributes."):
            key = name.removeprefix("attributes.")
            if key in event.attributes:
                event.attributes[key] = hide(name, event.attributes[key])
    for change in event.changes:
        wanted = f"changes.{change.field}".lower()
        rule_name = next((r for r in rules if r.lower() == wanted), None)
        rule_name = rule_name or ("changes.*" if "changes.*" in rules else None)
        if rule_name is None:
            continue
        if change.HasField("old_value"):
            change.old_value = hide(rule_name, change.old_value)
        if change.HasField("new_value"):
            change.new_value = hide(rule_name, change.new_value)
    if replaced:
        _scrub(event, replaced, set(rules))
    return event


def _spellings(value: str) -> set[str]:
    """How a raw value may appear inside the original record."""
    out = {value, value.replace("'", "''"), value.replace("'", "\\'"), value.replace('"', '""')}
    out.add(json.dumps(value, ensure_ascii=False)[1:-1])
    out.add(json.dumps(value)[1:-1])
    out.add(value.replace("\n", "\n\t"))  # PostgreSQL stderr continuation lines
    return {s for s in out if s}


def _scrub(event: pb.AuditEvent, replaced: dict[str, str], rules: set[str]) -> None:
    pairs = sorted(
        ((raw, new) for value, new in replaced.items() for raw in _spellings(value)),
        key=lambda pair: len(pair[0]),
        reverse=True,  # longest first: a value containing another is replaced whole
    )

    def scrub(text: str) -> str:
        for raw, new in pairs:
            if raw in text:
                text = text.replace(raw, new)
        return text

    event.original = scrub(event.original)
    if "message" not in rules:
        event.message = scrub(event.message)
    if event.parse_error:
        event.parse_error = scrub(event.parse_error)
    for key in list(event.attributes):
        if f"attributes.{key}" not in rules:
            event.attributes[key] = scrub(event.attributes[key])
    for change in event.changes:
        # Other fields' values may embed the raw value (e.g. a SQL statement).
        if change.HasField("old_value"):
            change.old_value = scrub(change.old_value)
        if change.HasField("new_value"):
            change.new_value = scrub(change.new_value)
    for attr in ("name", "id"):
        setattr(event.object, attr, scrub(getattr(event.object, attr)))
