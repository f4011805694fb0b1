"""Receipts exported by agents (``verify --receipts DIR``): an anchor outside the
collector's reach.

On every OK ack of a sealed format 2 batch the collector returns a `Receipt` signed
with its checkpoint key: the stream head it verified itself. Agents keep the latest
ones and export them as JSON lines, one receipt each::

    {"receipt": "<base64 Receipt.SerializeToString(deterministic=True)>",
     "agent_id": ..., "stream_id": ..., "last_sequence": ..., "head": ..., "received": ...}

Only ``receipt`` is read; the other keys are informational and never trusted. A
receipt whose signature verifies with a trusted collector key asserts that its stream
reached ``last_sequence`` with ``head``: OpenSearch or the checkpoints holding less
is a finding (TAIL_TRUNCATED for the sequences, RECEIPT_AHEAD for the checkpoints).
A receipt that does not verify, or a line that is not one, is reported (a problem of
the run, naming file and line) and trusts nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from collector.documents import iso_nanos
from proto import integrity
from proto.v1 import audit_pb2

RECEIPT_FILES = "*.jsonl"


@dataclass(frozen=True)
class Receipted:
    """The furthest point of one stream a valid receipt attests."""

    sequence: int
    head: bytes
    received: str  # the collector's signed receive time
    where: str  # file:line


@dataclass
class ReceiptView:
    """Per (agent, stream) the highest receipted point, and the lines not trusted."""

    heads: dict[tuple[str, str], Receipted] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    count: int = 0


def _parse(line: bytes) -> audit_pb2.Receipt:
    body = json.loads(line)
    raw = base64.b64decode(body["receipt"], validate=True)
    return audit_pb2.Receipt.FromString(raw)


def read_receipts(directory: Path, trusted: Mapping[str, Ed25519PublicKey]) -> ReceiptView:
    """Every receipt of ``directory/*.jsonl`` checked with `trusted` (collector keys)."""
    view = ReceiptView()
    if not directory.is_dir():
        view.problems.append(f"receipts directory {directory} does not exist")
        return view
    files = sorted(p for p in directory.glob(RECEIPT_FILES) if p.is_file())
    seen: dict[tuple[str, str, int], tuple[bytes, str]] = {}
    if not files:
        view.problems.append(f"no receipt file ({RECEIPT_FILES}) in {directory}")
    for path in files:
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                receipt = _parse(line)
            except (ValueError, KeyError, TypeError, binascii.Error, DecodeError):
                view.problems.append(f"{where}: not a receipt line (JSON with base64 'receipt')")
                continue
            if not integrity.receipt_valid(receipt, trusted):
                view.problems.append(
                    f"{where}: receipt of {receipt.agent_id}:{receipt.stream_id} at sequence "
                    f"{receipt.last_sequence} does not verify with a trusted collector key "
                    "(not trusted)"
                )
                continue
            view.count += 1
            point = (receipt.agent_id, receipt.stream_id, receipt.last_sequence)
            first = seen.setdefault(point, (bytes(receipt.head), where))
            if first[0] != receipt.head:
                # The collector signed two heads for one position: a fork it accepted.
                view.problems.append(
                    f"{where}: receipt of {receipt.agent_id}:{receipt.stream_id} at sequence "
                    f"{receipt.last_sequence} names another head than {first[1]}"
                )
            key = (receipt.agent_id, receipt.stream_id)
            known = view.heads.get(key)
            if known is None or receipt.last_sequence > known.sequence:
                view.heads[key] = Receipted(
                    receipt.last_sequence,
                    bytes(receipt.head),
                    iso_nanos(max(receipt.received_unix_nano, 0)),
                    where,
                )
    return view
