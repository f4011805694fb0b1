"""Errors of detection and response (`collector.detect`).

CollectorError (collector.errors)
├── ConfigError
│   └── RulesError          rules.yaml is invalid; one line per problem (exit 2)
└── DetectionError          OpenSearch could not be queried / written for detection
"""

from __future__ import annotations

from collector.errors import CollectorError, ConfigError


class RulesError(ConfigError):
    """The rules file is invalid; ``problems`` holds one line per problem."""


class DetectionError(CollectorError):
    """A detection query or alert write failed (the next evaluation retries)."""
