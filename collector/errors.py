"""Errors of the collector service (`crm-audit-collector`).

`collector.cli` reports every `CollectorError` as one line on stderr, never as a
traceback; ``exit_code`` says how the process ends (2: the operator's mistake, such as a
bad config; 1: something failed at run time).

    CollectorError                  base; exit 1
    ├── ConfigError                 collector.yaml is invalid; one line per problem (exit 2)
    ├── StartupError                the gRPC server cannot start (port in use, bad TLS files)
    ├── IndexingError               OpenSearch did not confirm every event of a batch
    │   ├── RetryableIndexingError  429 / 5xx / connection trouble: Ack STATUS_RETRY
    │   └── PermanentIndexingError  OpenSearch refuses even the dead-letter copy: Ack STATUS_RETRY
    │                               too (nothing may be lost), but logged as an error
    ├── LifecycleError              index templates / ISM policies could not be installed
    ├── HoldError                   a legal hold could not be placed, released or listed
    └── RetentionError              the retention job could not read or change an index
"""

from __future__ import annotations

from collections.abc import Sequence


class CollectorError(Exception):
    """Base of every error the collector reports to its operator."""

    exit_code = 1


class ConfigError(CollectorError):
    """The configuration file is invalid; ``problems`` holds one line per problem."""

    exit_code = 2

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class StartupError(CollectorError):
    """The server could not be started (e.g. the listen address cannot be bound)."""


class IndexingError(CollectorError):
    """OpenSearch did not confirm every event of a batch; the batch must be resent."""

    retryable = True


class RetryableIndexingError(IndexingError):
    """Transient failure (429, 5xx, timeout, connection refused) that outlived our retries."""


class PermanentIndexingError(IndexingError):
    """OpenSearch refused a write that retrying will not fix (even the dead-letter copy)."""

    retryable = False


class LifecycleError(CollectorError):
    """Index templates or retention policies could not be installed."""


class HoldError(CollectorError):
    """A legal hold could not be placed, released or listed (``usage``: the caller's
    arguments are wrong, exit 2)."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        if usage:
            self.exit_code = 2


class RetentionError(CollectorError):
    """The retention job could not read, record or change an index (``usage``: the
    caller's arguments are wrong, exit 2)."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        if usage:
            self.exit_code = 2
