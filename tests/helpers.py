"""Small helpers shared by tests (import as `from tests.helpers import ...`)."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def traversable_tmpdir(prefix: str) -> Path:
    """A fresh directory directly under the system temp dir.

    pytest's own tmp dirs live under a 0700 directory of the current user; a process
    that runs as another user (the OpenSearch node runs as `crm-audit-os` when tests
    run as root) cannot reach them. The caller removes the directory.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o755)
    return path
