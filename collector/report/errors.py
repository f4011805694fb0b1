"""Errors of the compliance report.

ReportError                 base; ``exit_code`` is what `crm-audit` exits with
├── ReportInputError        a user's mistake: bad period, unreadable key or policy
│                           file (exit 2)
├── ReportDataError         OpenSearch could not be read (exit 1)
└── SignatureError          a report file is not a signed crm-audit report, or it
                            does not verify (exit 1)
"""

from __future__ import annotations


class ReportError(Exception):
    """Base of the report errors."""

    exit_code = 1


class ReportInputError(ReportError):
    """A user's mistake (bad argument, missing or unreadable file)."""

    exit_code = 2


class ReportDataError(ReportError):
    """OpenSearch answered with an error or not at all."""


class SignatureError(ReportError):
    """The report's signature or digests do not verify."""
