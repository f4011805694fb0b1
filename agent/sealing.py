"""Agent side of tamper evidence: signing key, batch seals and heartbeats (format 2).

Pure module (no threads, no clock: callers pass times). The rules themselves (event
hash, head chain, seal bytes) live in `proto.integrity`.

The stream head is a function of the spooled event bytes alone
(head_n = head_link(head_{n-1}, event_hash(bytes_n)), from genesis_v2(agent, stream)),
so nothing here keeps chain state: agent.outbox folds the hashes as it reads the spool
and seals each batch with `seal_events`; the acked head is saved with the checkpoint.

Files in ``state_dir``: ``signing-key.pem`` (Ed25519 PKCS#8, mode 0600, created with
O_EXCL|O_NOFOLLOW and never widened) and ``signing-key.pub`` (public key, PEM, for the
admin to register on the collector: ``crm-audit keys register``). ``chain.json`` of
stream format 1 is no longer written by the agent (removed when an old state is taken
over); `Chainer`, `seal` and `heartbeat` below still produce format 1 for tools and
tests that build such history.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.errors import AgentError
from proto import integrity
from proto.v1 import audit_pb2 as pb

KEY_FILE = "signing-key.pem"
PUBLIC_KEY_FILE = "signing-key.pub"
LEGACY_CHAIN_FILE = "chain.json"  # stream format 1's chain head
CHAIN_FILE = LEGACY_CHAIN_FILE
_CHAIN_VERSION = 1


class IntegrityError(AgentError):
    """The signing key is unusable, or a seal cannot be made as asked."""


@dataclass(frozen=True)
class AgentKey:
    """The agent's Ed25519 signing key and its key id."""

    private: Ed25519PrivateKey
    key_id: str

    @classmethod
    def load_or_create(cls, state_dir: Path) -> AgentKey:
        """Load ``state_dir/signing-key.pem``; create it (0600) on first start."""
        path = state_dir / KEY_FILE
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            return cls._create(state_dir)
        except OSError as exc:
            raise IntegrityError(f"cannot read signing key {path}: {exc.strerror}") from exc
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise IntegrityError(
                f"signing key {path} is accessible to other users (mode {mode:04o}); chmod 600"
            )
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise IntegrityError(f"{path} is not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise IntegrityError(f"{path} is not an Ed25519 key")
        loaded = cls(key, integrity.key_id(key.public_key()))
        pub = state_dir / PUBLIC_KEY_FILE
        if not pub.exists():
            _write_new(pub, loaded.public_pem(), 0o644)
        return loaded

    @classmethod
    def _create(cls, state_dir: Path) -> AgentKey:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_new(state_dir / KEY_FILE, pem, 0o600)
        created = cls(key, integrity.key_id(key.public_key()))
        pub = state_dir / PUBLIC_KEY_FILE
        pub.unlink(missing_ok=True)  # a stale public key of a lost private key
        _write_new(pub, created.public_pem(), 0o644)
        return created

    def public_pem(self) -> bytes:
        return integrity.public_key_pem(self.private.public_key())


def _write_new(path: Path, data: bytes, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise IntegrityError(f"{path} appeared while creating it; refusing to overwrite") from None
    except OSError as exc:
        raise IntegrityError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def seal_events(
    key: AgentKey,
    *,
    agent_id: str,
    stream_id: str,
    first_sequence: int,
    prev_head: bytes,
    event_hashes: Sequence[bytes],
    time_range: tuple[int, int],
    now_unix_nano: int,
) -> pb.Seal:
    """A signed format 2 seal over consecutive events from `first_sequence`: their hashes
    in order, the head chained over them from `prev_head`, their event-time range
    (proto.integrity.event_time_range over the same events)."""
    if not event_hashes:
        raise IntegrityError("an empty batch is sealed with `heartbeat_seal`")
    if len(prev_head) != integrity.HASH_LEN:
        raise IntegrityError(f"previous head must be {integrity.HASH_LEN} bytes")
    head = prev_head
    for h in event_hashes:
        head = integrity.head_link(head, h)
    sealed = pb.Seal(
        agent_id=agent_id,
        first_sequence=first_sequence,
        last_sequence=first_sequence + len(event_hashes) - 1,
        prev_chain_head=prev_head,
        chain_head=head,
        event_count=len(event_hashes),
        time_unix_nano=now_unix_nano,
        format_version=integrity.FORMAT_V2,
        stream_id=stream_id,
        event_hashes=event_hashes,
        min_event_time_unix_nano=time_range[0],
        max_event_time_unix_nano=time_range[1],
    )
    integrity.sign_seal(sealed, key.private)
    return sealed


def heartbeat_seal(
    key: AgentKey,
    *,
    agent_id: str,
    stream_id: str,
    sequence: int,
    head: bytes,
    now_unix_nano: int,
) -> pb.Seal:
    """A format 2 seal without events restating the head at `sequence` (0 before any)."""
    sealed = pb.Seal(
        agent_id=agent_id,
        first_sequence=sequence,
        last_sequence=sequence,
        prev_chain_head=head,
        chain_head=head,
        event_count=0,
        time_unix_nano=now_unix_nano,
        format_version=integrity.FORMAT_V2,
        stream_id=stream_id,
    )
    integrity.sign_seal(sealed, key.private)
    return sealed


# -- stream format 1 ------------------------------------------------------------------
# The running agent no longer produces format 1. These producers stay for one release,
# for tools and tests that build format 1 history (the collector and verify still read
# it): a chain in chain.json, chain fields inside each event, v1 seals.


class Chainer:
    """Links events into a format 1 hash chain, in sequence order.

    ``head_sequence`` is the sequence of the last linked event (None before the first);
    ``head`` its chain hash (the genesis value before the first). The first event may
    carry any sequence; every later one must carry ``head_sequence + 1``.
    """

    def __init__(
        self, agent_id: str, head_sequence: int | None, head: bytes, path: Path | None = None
    ) -> None:
        self.agent_id = agent_id
        self.head_sequence = head_sequence
        self.head = head
        self.path = path

    @classmethod
    def load(cls, state_dir: Path, agent_id: str) -> Chainer:
        """The chain state in ``state_dir/chain.json``; a fresh chain if there is none."""
        path = state_dir / LEGACY_CHAIN_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(agent_id, None, integrity.genesis(agent_id), path)
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"cannot read chain state {path}: {exc}") from exc
        try:
            if data["version"] != _CHAIN_VERSION or data["agent_id"] != agent_id:
                raise IntegrityError(
                    f"{path}: chain state of agent {data['agent_id']!r} version "
                    f"{data['version']}, expected {agent_id!r} version {_CHAIN_VERSION}"
                )
            sequence = data["head_sequence"]
            head = bytes.fromhex(data["head"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"{path}: malformed chain state ({exc})") from exc
        if len(head) != integrity.HASH_LEN or not (sequence is None or isinstance(sequence, int)):
            raise IntegrityError(f"{path}: malformed chain state")
        return cls(agent_id, sequence, head, path)

    def link(self, event: pb.AuditEvent) -> None:
        """Set ``event.chain_prev`` and ``event.chain_hash``; advance the head."""
        if self.head_sequence is not None and event.sequence != self.head_sequence + 1:
            raise IntegrityError(
                f"event sequence {event.sequence} does not follow the chain head "
                f"{self.head_sequence}"
            )
        # Canonical bytes first: with the chain fields still unset they are the event's
        # own deterministic serialization, without the copy-and-clear it needs after.
        canonical = integrity.canonical_event_bytes(event)
        event.chain_prev = self.head
        event.chain_hash = integrity.chain_link(self.head, canonical)
        self.head = event.chain_hash
        self.head_sequence = event.sequence

    def snapshot(self) -> tuple[int | None, bytes]:
        """The head, to `rewind` to when a spool write that linked events failed."""
        return (self.head_sequence, self.head)

    def rewind(self, snapshot: tuple[int | None, bytes]) -> None:
        """Undo links whose spool write failed (their sequences will be reused)."""
        self.head_sequence, self.head = snapshot

    def recover(self, last_event: pb.AuditEvent) -> None:
        """Fast-forward to an event already linked and spooled before a crash."""
        if len(last_event.chain_hash) != integrity.HASH_LEN:
            raise IntegrityError(f"event {last_event.sequence} carries no chain hash")
        if self.head_sequence is None or last_event.sequence > self.head_sequence:
            self.head = last_event.chain_hash
            self.head_sequence = last_event.sequence

    def save(self) -> None:
        """Write the head atomically (temp file, fsync, rename)."""
        if self.path is None:
            return
        body = json.dumps(
            {
                "version": _CHAIN_VERSION,
                "agent_id": self.agent_id,
                "head_sequence": self.head_sequence,
                "head": self.head.hex(),
            }
        ).encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)


def seal(batch: pb.Batch, key: AgentKey, *, now_unix_nano: int, check: bool = True) -> None:
    """Fill ``batch.seal`` over its events (linked, consecutive, in sequence order).

    With `check` (default) every event's chain hash is recomputed before signing, so a
    corrupted spool record is refused rather than signed.
    """
    events = batch.events
    if not events:
        raise IntegrityError("an empty batch is sealed with `heartbeat`")
    prev = events[0].chain_prev
    for event in events:
        if event.chain_prev != prev or len(prev) != integrity.HASH_LEN:
            raise IntegrityError(f"event {event.sequence} is not linked to its predecessor")
        if check and event.chain_hash != integrity.chain_link(
            prev, integrity.canonical_event_bytes(event)
        ):
            raise IntegrityError(f"event {event.sequence}: chain hash does not match its content")
        prev = event.chain_hash
    batch.seal.CopyFrom(
        pb.Seal(
            agent_id=batch.agent_id,
            first_sequence=events[0].sequence,
            last_sequence=events[-1].sequence,
            prev_chain_head=events[0].chain_prev,
            chain_head=events[-1].chain_hash,
            event_count=len(events),
            time_unix_nano=now_unix_nano,
        )
    )
    integrity.sign_seal(batch.seal, key.private)


def heartbeat(
    key: AgentKey,
    agent_id: str,
    head_sequence: int | None,
    head: bytes,
    *,
    now_unix_nano: int,
    batch_id: int = 0,
) -> pb.Batch:
    """A batch without events whose seal restates the current chain head."""
    sequence = head_sequence or 0
    batch = pb.Batch(
        batch_id=batch_id,
        agent_id=agent_id,
        seal=pb.Seal(
            agent_id=agent_id,
            first_sequence=sequence,
            last_sequence=sequence,
            prev_chain_head=head,
            chain_head=head,
            event_count=0,
            time_unix_nano=now_unix_nano,
        ),
    )
    integrity.sign_seal(batch.seal, key.private)
    return batch


__all__ = [
    "AgentKey",
    "Chainer",
    "IntegrityError",
    "heartbeat",
    "heartbeat_seal",
    "seal",
    "seal_events",
]
