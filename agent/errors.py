"""Errors raised by the agent.

    AgentError                  base of everything the agent raises on purpose
    ├── ConfigError             the config file is wrong; carries one line per problem
    ├── CheckpointError         the checkpoint in state_dir is unreadable or of an unknown version
    ├── SpoolWriteError         an append to the spool failed (disk full, I/O error); retried
    └── ShipError               a batch could not be delivered on this attempt
        ├── RetryableShipError  connection/stream failure or STATUS_RETRY: resend later
        └── PermanentShipError  STATUS_REJECTED: the batch as sent is invalid

A user's mistake (ConfigError) ends the CLI with its lines on stderr and exit code 2.
Ship errors never end the agent: shipping retries with backoff, nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence


class AgentError(Exception):
    """Base class of the agent's own errors."""


class ConfigError(AgentError):
    """The config is invalid; `problems` holds one `file:line: key.path: message` per issue."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class CheckpointError(AgentError):
    """The checkpoint file exists but cannot be used (corrupt or unknown version)."""


class SpoolWriteError(AgentError):
    """Appending to the spool failed; nothing of that append was kept, it can be retried."""


class ShipError(AgentError):
    """A batch was not acknowledged as delivered on this attempt."""


class RetryableShipError(ShipError):
    """Transient: the stream failed or the collector answered STATUS_RETRY."""


class PermanentShipError(ShipError):
    """The collector answered STATUS_REJECTED; resending unchanged will not help."""
