"""Registered agent signing keys: ``<keys_dir>/<agent_id>.pub``.

Binding of a signing key to an mTLS identity: the file name is the agent id, which is
the CN of the agent's client certificate. A seal is accepted only when the batch came
over a connection whose certificate CN equals the seal's ``agent_id`` and the seal's
``key_id`` belongs to a key in that agent's file. A file may hold several PEM public
keys (key rotation: append the new key, keep the old one so older seals still verify).

Registration (`register_key`, `crm-audit keys register`) is the admin's act of
vouching that a public key came from the host holding the certificate of that name;
the agent writes its public key to ``state_dir/signing-key.pub`` on first start.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proto import integrity

AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class KeyRegistrationError(ValueError):
    """A key file cannot be registered (bad name, not an Ed25519 public key)."""


def key_file(keys_dir: Path, agent_id: str) -> Path:
    if not AGENT_ID_RE.fullmatch(agent_id):
        raise KeyRegistrationError(f"invalid agent id {agent_id!r}")
    return keys_dir / f"{agent_id}.pub"


def read_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """Key id -> key of one ``.pub`` file; {} when it does not exist."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        return {}
    return {integrity.key_id(k): k for k in integrity.load_public_keys(pem)}


def register_key(keys_dir: Path, agent_id: str, public_pem: bytes) -> tuple[str, bool]:
    """Append the key(s) of `public_pem` to the agent's file; return (key id, added)."""
    try:
        new = integrity.load_public_keys(public_pem)
    except ValueError as exc:
        raise KeyRegistrationError(f"not an Ed25519 public key in PEM form: {exc}") from None
    path = key_file(keys_dir, agent_id)
    keys_dir.mkdir(parents=True, exist_ok=True)
    present = read_keys(path)
    added = False
    for key in new:
        if integrity.key_id(key) in present:
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "ab") as handle:
            handle.write(integrity.public_key_pem(key))
        added = True
    return integrity.key_id(new[-1]), added


class KeyRing:
    """Keys of every agent, re-read when a file changes (registration needs no restart)."""

    def __init__(self, keys_dir: Path | None) -> None:
        self.keys_dir = keys_dir
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, dict[str, Ed25519PublicKey]]] = {}

    def keys_for(self, agent_id: str) -> dict[str, Ed25519PublicKey]:
        if self.keys_dir is None or not AGENT_ID_RE.fullmatch(agent_id):
            return {}
        path = self.keys_dir / f"{agent_id}.pub"
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        with self._lock:
            cached = self._cache.get(agent_id)
            if cached and cached[0] == mtime:
                return cached[1]
        try:
            keys = read_keys(path)
        except ValueError:
            keys = {}
        with self._lock:
            self._cache[agent_id] = (mtime, keys)
        return keys
