"""The ``detection:`` section of `collector.yaml` (optional; absent = detection off).

detection:
  rules: rules.yaml            # the rules file (relative to collector.yaml)
  interval_s: 5                # how often windowed rules are evaluated
  max_delay_s: 600             # events received later than this after their own time are
                               # late data: their alerts say alert.late: true
  settle_s: 2                  # an event is searchable this long after its receipt
  reread_s: 60                 # each evaluation re-reads this much of the receipt timeline
                               # (a batch whose indexing was retried lands late)
  max_catchup_s: 86400         # a rule evaluated for the first time starts with the
                               # events received this long ago (older: rules backfill)
  lease_ttl_s: 30              # a silent collector's leases are taken over after this

Windowed rules follow the *receipt* timeline (``event.ingested``, set by the collector
when a batch arrives) with a cursor per rule, and evaluate the received events around
their *own* times (``@timestamp``): a host that ships a day-old backlog gets its alerts.
  notifiers:                   # every alert at or above min_severity is POSTed here
    - name: soc
      url: https://soc.example/hooks/crm-audit
      secret_file: secrets/soc-webhook.key   # HMAC key, chmod 600
      min_severity: medium
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from collector.detect.rules import Severity, WebhookHook


class NotifierConfig(WebhookHook):
    """A webhook that receives every alert at or above `min_severity`."""

    name: str = Field(min_length=1, max_length=64)
    min_severity: Severity = "low"
    backoff_s: float = Field(default=0.5, gt=0, le=60)


class DetectionConfig(BaseModel):
    """Detection and response settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: Path | None = None
    interval_s: float = Field(default=5, ge=0.2, le=3600)
    max_delay_s: float = Field(
        default=600,
        ge=0,
        le=30 * 86400,
        description="Events received later than this after their own time are late data: "
        "their alerts say alert.late: true (and alert.lag_s).",
    )
    settle_s: float = Field(
        default=2,
        ge=0,
        le=600,
        description="Windowed rules read events received up to this long ago (an event is "
        "searchable a refresh after its batch was indexed).",
    )
    reread_s: float = Field(
        default=60,
        ge=0,
        le=86400,
        description="Each evaluation re-reads this much of the receipt timeline before its "
        "cursor (a batch whose indexing was retried becomes searchable late); idempotent.",
    )
    max_catchup_s: float = Field(
        default=86400,
        ge=60,
        le=365 * 86400,
        description="A windowed rule evaluated for the first time starts with the events "
        "received this long ago (older ones: crm-audit rules backfill).",
    )
    lease_ttl_s: float = Field(default=30, ge=1, le=3600)
    notifiers: list[NotifierConfig] = []

    @field_validator("rules", mode="before")
    @classmethod
    def _rules_file(cls, value: Any, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = Path(str(value)).expanduser()
        if not path.is_absolute():
            base = (info.context or {}).get("config_dir")
            if base is not None:
                path = Path(base) / path
        if not path.is_file():
            raise ValueError(f"file not found: {path}")
        return path

    @model_validator(mode="after")
    def _ttl(self) -> DetectionConfig:
        if self.lease_ttl_s <= self.interval_s:
            raise ValueError("lease_ttl_s must be longer than interval_s")
        names = [n.name for n in self.notifiers]
        if len(set(names)) != len(names):
            raise ValueError("notifiers: names must be unique")
        return self
