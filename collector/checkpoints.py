"""Signed checkpoints outside OpenSearch: the chain heads, appended to a file.

Every ``integrity.checkpoint_interval_s`` (and at shutdown) the collector takes the
heads it verified itself (`collector.verified`: heads of authentic seals, never a chain
head document read back from OpenSearch, which any writer there could change) and, if
anything moved, appends one line to ``<checkpoint_dir>/checkpoints-<key id[:16]>.jsonl``
(one file per collector key, so collectors sharing a directory never interleave)::

    {"v": 2, "time": "...Z", "key_id": "<hex>", "prev": "<hex SHA-256 of the previous
     line, '' for the first>", "agents": {"<id>": {"sequence": N, "head": "<hex>"}},
     "streams": {"<id>:<stream>": {"agent": "<id>", "stream": "<stream>",
                                   "sequence": N, "head": "<hex>"}},
     "sig": "<base64 Ed25519>"}

``agents`` holds agents' stream format 1 chains (as in ``"v": 1`` lines), ``streams``
every stream format 2 stream (its head is the head chain over event hashes). A line
carries every head the collector knows, seeded at start from its own last line.

The signature covers ``"crm-audit/checkpoint/v1\\0" || JSON of the line without "sig"``
(sorted keys, no spaces). ``prev`` chains the lines, so editing or dropping a line in
the middle is evident; the last line being dropped is what WORM storage (the
production home of this directory) prevents. The collector key is Ed25519, created
with mode 0600 on first start; its public key is written beside it (``.pub``) and is
what `crm-audit verify --checkpoints` needs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from collector.documents import iso_nanos
from collector.errors import IndexingError, StartupError
from collector.verified import Head, StreamKey
from proto import integrity

log = logging.getLogger(__name__)

DOMAIN_CHECKPOINT = b"crm-audit/checkpoint/v1\0"
CHECKPOINT_VERSION = 2
#: Per chain its head: key (agent, stream) with stream "" for a format 1 chain; a bare
#: agent id is read as its format 1 chain.
Heads = Mapping[StreamKey, Head] | Mapping[str, Head]


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The collector's checkpoint key; created with mode 0600 when absent."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise StartupError(f"cannot create collector key {path}: {exc.strerror}") from exc
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fsync(handle.fileno())
        path.with_suffix(".pub").write_bytes(integrity.public_key_pem(key.public_key()))
        return key
    except OSError as exc:
        raise StartupError(f"cannot read collector key {path}: {exc.strerror}") from exc
    if path.stat().st_mode & 0o077:
        raise StartupError(f"collector key {path} is accessible to other users; chmod 600")
    loaded = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise StartupError(f"collector key {path} is not an Ed25519 key")
    key = loaded
    pub = path.with_suffix(".pub")
    if not pub.exists():
        pub.write_bytes(integrity.public_key_pem(key.public_key()))
    return key


def _signing_bytes(body: Mapping[str, Any]) -> bytes:
    return DOMAIN_CHECKPOINT + json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode("ascii")


def _chain_key(key: StreamKey | str) -> StreamKey:
    return key if isinstance(key, tuple) else (key, "")


def _heads_json(heads: Heads) -> tuple[dict[str, Any], dict[str, Any]]:
    """(agents: format 1 chains by agent, streams: format 2 streams by "agent:stream")."""
    agents: dict[str, Any] = {}
    streams: dict[str, Any] = {}
    for (agent, stream), (sequence, head) in sorted(
        (_chain_key(key), value) for key, value in heads.items()
    ):
        if stream:
            streams[f"{agent}:{stream}"] = {
                "agent": agent,
                "stream": stream,
                "sequence": sequence,
                "head": head.hex(),
            }
        else:
            agents[agent] = {"sequence": sequence, "head": head.hex()}
    return agents, streams


def _heads_of(body: Mapping[str, Any]) -> dict[StreamKey, Head]:
    """The heads a checkpoint line states (either version)."""
    heads: dict[StreamKey, Head] = {}
    for agent, entry in body.get("agents", {}).items():
        sequence = entry.get("sequence")
        heads[(str(agent), "")] = (
            int(sequence) if sequence is not None else None,
            bytes.fromhex(entry["head"]),
        )
    for entry in body.get("streams", {}).values():
        sequence = entry.get("sequence")
        heads[(str(entry["agent"]), str(entry["stream"]))] = (
            int(sequence) if sequence is not None else None,
            bytes.fromhex(entry["head"]),
        )
    return heads


class CheckpointFile:
    """Appends signed, hash-linked checkpoint lines to one file."""

    def __init__(self, directory: Path, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.key_id = integrity.key_id(key.public_key())
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"checkpoints-{self.key_id[:16]}.jsonl"
        self._prev = ""
        self._last: tuple[Any, Any] | None = None
        self._last_body: dict[str, Any] | None = None
        if self.path.exists():
            lines = self.path.read_bytes().splitlines()
            if lines:
                self._prev = hashlib.sha256(lines[-1]).hexdigest()
                self._last_body = json.loads(lines[-1])
                self._last = (self._last_body.get("agents"), self._last_body.get("streams", {}))

    def last_heads(self) -> dict[StreamKey, Head]:
        """The heads of this file's last line, if this collector's key signed it (they
        were verified by it before a restart); {} otherwise."""
        body = dict(self._last_body or {})
        try:
            signature = base64.b64decode(body.pop("sig"))
            self.key.public_key().verify(signature, _signing_bytes(body))
            return _heads_of(body)
        except (InvalidSignature, ValueError, KeyError, TypeError, AttributeError):
            if self._last_body is not None:
                log.warning(
                    "the last line of %s is not a checkpoint of this collector's key: "
                    "not used to seed the verified heads",
                    self.path,
                )
            return {}

    def append(self, heads: Heads, *, now_unix_nano: int, force: bool = False) -> bool:
        """Append a checkpoint when the heads changed (or `force`); True if written."""
        agents, streams = _heads_json(heads)
        if not force and (agents, streams) == self._last:
            return False
        body: dict[str, Any] = {
            "v": CHECKPOINT_VERSION,
            "time": iso_nanos(now_unix_nano),
            "key_id": self.key_id,
            "prev": self._prev,
            "agents": agents,
            "streams": streams,
        }
        body["sig"] = base64.b64encode(self.key.sign(_signing_bytes(body))).decode("ascii")
        line = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line + b"\n")
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                # A full disk (ENOSPC) may have let part of the line in: cut it off, so
                # the next append starts a whole line and the chain of lines holds.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        self._prev = hashlib.sha256(line).hexdigest()
        self._last = (agents, streams)
        self._last_body = body
        return True


class CheckpointWriter:
    """Background thread: every interval, the verified heads -> `CheckpointFile`."""

    def __init__(
        self,
        read_heads: Callable[[], Mapping[StreamKey, Head]],
        file: CheckpointFile,
        *,
        interval_s: float,
        clock_ns: Callable[[], int],
    ) -> None:
        self.read_heads = read_heads
        self.file = file
        self.interval_s = interval_s
        self.clock_ns = clock_ns
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write_once(self) -> bool:
        try:
            heads = self.read_heads()
        except IndexingError as exc:
            log.warning("checkpoint skipped: %s", exc)
            return False
        written = self.file.append(heads, now_unix_nano=self.clock_ns())
        if written:
            log.info("checkpoint of %d chains appended to %s", len(heads), self.file.path)
        return written

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="checkpoints", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.interval_s):
            try:
                self.write_once()
            except OSError as exc:
                if not failing:  # once, not every interval: batches are still served
                    log.error(
                        "cannot append checkpoint to %s: %s; checkpoints paused, retried "
                        "every %.0f s",
                        self.file.path,
                        exc,
                        self.interval_s,
                    )
                failing = True
                continue
            if failing:
                log.info("checkpoints resumed: %s writable again", self.file.path)
                failing = False

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.write_once()
        except OSError as exc:
            log.error("cannot append checkpoint to %s: %s", self.file.path, exc)


@dataclass
class CheckpointView:
    """What a checkpoint directory says: per agent (format 1 chain) and per (agent,
    stream) (format 2) the highest attested head, as (sequence, head hex, time)."""

    heads: dict[str, tuple[int | None, str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    lines: int = 0
    streams: dict[StreamKey, tuple[int | None, str, str]] = field(default_factory=dict)


def read_checkpoints(
    directory: Path, trusted: Mapping[str, Ed25519PublicKey] | None = None
) -> CheckpointView:
    """Read and check every ``checkpoints-*.jsonl`` of `directory`.

    `trusted` maps key id to collector public key; default: every ``*.pub`` in the
    directory (fine for tests; in production pass the key from a trusted copy).
    ``heads`` maps agent -> (sequence, head hex, time of the checkpoint).
    """
    view = CheckpointView()
    keys = dict(trusted or {})
    if trusted is None:
        for pub in sorted(directory.glob("*.pub")):
            try:
                for key in integrity.load_public_keys(pub.read_bytes()):
                    keys[integrity.key_id(key)] = key
            except ValueError:
                view.problems.append(f"{pub}: not an Ed25519 public key")
    for path in sorted(directory.glob("checkpoints-*.jsonl")):
        prev = ""
        for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
            where = f"{path.name}:{number}"
            view.lines += 1
            try:
                body = json.loads(raw)
                sig = base64.b64decode(body.pop("sig"))
                signer = keys.get(body.get("key_id", ""))
                if signer is None:
                    view.problems.append(f"{where}: signed by an unknown collector key")
                    continue
                signer.verify(sig, _signing_bytes(body))
            except InvalidSignature:
                view.problems.append(f"{where}: checkpoint signature does not verify")
                continue
            except (ValueError, KeyError, TypeError, AttributeError):
                view.problems.append(f"{where}: malformed checkpoint line")
                continue
            if body.get("prev", "") != prev:
                view.problems.append(
                    f"{where}: does not follow the previous line (lines removed or edited)"
                )
            prev = hashlib.sha256(raw).hexdigest()
            for agent, entry in body.get("agents", {}).items():
                _attest(view.heads, agent, entry, str(body["time"]))
            for entry in body.get("streams", {}).values():
                chain = (str(entry.get("agent", "")), str(entry.get("stream", "")))
                _attest(view.streams, chain, entry, str(body["time"]))
    return view


def _attest(
    into: dict[Any, tuple[int | None, str, str]], key: Any, entry: Mapping[str, Any], when: str
) -> None:
    """Keep the highest sequence a checkpoint attests for `key`."""
    sequence = entry.get("sequence")
    if sequence is None:
        return
    known = into.get(key)
    if known is None or known[0] is None or sequence >= known[0]:
        into[key] = (int(sequence), str(entry["head"]), when)
