"""Errors of the `crm-audit` admin tool.

Every error here is reported by `collector.admin.cli` as one line on stderr,
``crm-audit: <message>``, never as a traceback. ``exit_code`` says how the process
ends: 2 for a user's mistake (bad arguments, a file in the way, a missing CA), 1 for
something that went wrong at run time (a download failed, the node did not come up).

    AdminError                      base; exit 2
    ├── UsageError                  bad command line
    ├── PkiError                    certificate authority / certificate problems
    │   ├── InvalidNameError        agent name not allowed
    │   ├── AlreadyExistsError      refusing to overwrite a CA, key or certificate
    │   └── CaMissingError          no CA in the PKI directory
    ├── SampleError                 cannot write the sample audit log
    └── NodeError                   embedded OpenSearch node problems
        ├── NodeSetupError          no Java, port in use, home not usable, ... (exit 2)
        ├── DownloadError           an artifact did not resolve from Maven Central (exit 1)
        ├── InstallError            unpacking or installing a plugin failed (exit 1)
        └── NodeStartError          the node did not start or stop in time (exit 1)
"""

from __future__ import annotations


class AdminError(Exception):
    """Base of every error the admin tool reports to its user."""

    exit_code = 2


class UsageError(AdminError):
    """The command line is wrong."""


class PkiError(AdminError):
    """A certificate authority or certificate cannot be created or used."""


class InvalidNameError(PkiError):
    """An agent name does not match the allowed pattern."""


class AlreadyExistsError(PkiError):
    """A CA, key or certificate is already there; the tool never overwrites one."""


class CaMissingError(PkiError):
    """The PKI directory holds no CA."""


class SampleError(AdminError):
    """The sample audit log cannot be written."""


class NodeError(AdminError):
    """The embedded OpenSearch node cannot be installed, started, stopped or queried."""


class NodeSetupError(NodeError):
    """Something the user can fix stands in the way: no Java, port in use, bad home."""


class DownloadError(NodeError):
    """A required artifact could not be fetched."""

    exit_code = 1


class InstallError(NodeError):
    """Unpacking the distribution or installing a plugin failed."""

    exit_code = 1


class NodeStartError(NodeError):
    """The node process did not come up (or go down) as expected."""

    exit_code = 1
