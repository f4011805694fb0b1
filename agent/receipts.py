"""The collector's signed receipts, kept by the agent as anchors outside the
collector's reach (docs/receipts.md).

Every OK ack of a sealed format 2 batch may carry `Ack.receipt`: the collector's
Ed25519 signature over the stream head it verified itself. The agent keeps the latest
`KEEP` per stream in ``state_dir/receipts/``, one file per receipt named
``<stream>-<last sequence, 20 digits>.json``, each holding one JSON line::

    {"agent_id": "...", "stream_id": "...", "last_sequence": N, "head": "<hex>",
     "received_unix_nano": T, "key_id": "<collector key id>",
     "receipt": "<base64 of Receipt.SerializeToString(deterministic=True)>"}

written atomically (temporary file, fsync, rename), mode 0600. The signed receipt is
the base64 field; the others repeat what it says, for people and tools that do not
decode it. `export` gathers them into one JSONL (`crm-audit-agent receipts`) that
`crm-audit verify --receipts DIR` reads.

The agent does not verify receipts: it has no trust root for the collector's
checkpoint key (verify has, from its keys directory). It keeps what it was given; a
forged receipt fails at verify, a missing one is what verify reports.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.durable import write_synced
from proto.v1 import audit_pb2 as pb

log = logging.getLogger(__name__)

DIR_NAME = "receipts"  # under state_dir
KEEP = 64  # per stream
_NAME = re.compile(r"([0-9a-f]{16})-(\d{20})\.json")


def to_json(receipt: pb.Receipt) -> dict[str, Any]:
    """The JSON line of one receipt (docs/receipts.md)."""
    return {
        "agent_id": receipt.agent_id,
        "stream_id": receipt.stream_id,
        "last_sequence": receipt.last_sequence,
        "head": receipt.head.hex(),
        "received_unix_nano": receipt.received_unix_nano,
        "key_id": receipt.key_id,
        "receipt": base64.b64encode(receipt.SerializeToString(deterministic=True)).decode(),
    }


class ReceiptStore:
    """The bounded receipt directory of one agent (module docstring)."""

    def __init__(self, state_dir: Path, keep: int = KEEP) -> None:
        self.directory = state_dir / DIR_NAME
        self.keep = keep

    def add(self, receipt: pb.Receipt) -> None:
        """Keep `receipt`; drop the oldest of its stream beyond `keep`. OSError on failure."""
        name = f"{receipt.stream_id}-{receipt.last_sequence:020d}.json"
        if not _NAME.fullmatch(name):
            log.warning("receipt for an invalid stream id %r ignored", receipt.stream_id[:32])
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = (json.dumps(to_json(receipt), separators=(",", ":")) + "\n").encode()
        tmp = self.directory / (name + ".tmp")
        write_synced(tmp, body)
        tmp.replace(self.directory / name)
        self._prune(receipt.stream_id)

    def _prune(self, stream_id: str) -> None:
        mine = sorted(p for p in self._files() if p.name.startswith(stream_id + "-"))
        for old in mine[: max(0, len(mine) - self.keep)]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()

    def _files(self) -> list[Path]:
        try:
            return [p for p in self.directory.iterdir() if _NAME.fullmatch(p.name)]
        except FileNotFoundError:
            return []

    def lines(self) -> Iterator[str]:
        """Every kept receipt's JSON line, by stream then sequence (skipping unreadable)."""
        for path in sorted(self._files()):
            try:
                text = path.read_text(encoding="utf-8").strip()
                json.loads(text)
            except (OSError, ValueError) as exc:
                log.warning("receipt file %s unreadable, skipped: %s", path, exc)
                continue
            yield text


def export(store: ReceiptStore, out: Path, agent_id: str) -> tuple[Path, int]:
    """Write every kept receipt to ``out/<agent_id>.receipts.jsonl`` (0600, atomically);
    the file and how many lines it holds."""
    out.mkdir(parents=True, exist_ok=True)
    lines = list(store.lines())
    target = out / f"{agent_id}.receipts.jsonl"
    tmp = out / f".{agent_id}.receipts.jsonl.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(target)
    return target, len(lines)


__all__ = ["DIR_NAME", "KEEP", "ReceiptStore", "export", "to_json"]
