"""Signed receipts in acks: the collector's statement of a stream head it verified itself.

On each STATUS_OK ack of a sealed stream format 2 batch whose seal is authentic (agent
signature with a registered key, heads recomputed over the received events), the ack
carries a `Receipt`: agent, stream, the batch's last sequence, the head after it as
this collector recomputed it in this batch (for a heartbeat: the head it restates), and
the receive time, signed with the collector's checkpoint key
(`proto.integrity.sign_receipt`). The agent keeps receipts outside the collector's and
OpenSearch's reach; `verify --receipts` holds both to them.

No receipt when the collector has no checkpoint key (``integrity.checkpoint_dir``
unset: the key lives there unless ``integrity.collector_key`` names it), for format 1
batches, unsealed or unverified batches, and for a batch found to fork the stream (two
signed histories of the same sequences: the collector keeps the first one and does not
vouch for the second).
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.gate import FORK
from proto import integrity
from proto.v1 import audit_pb2


def receipt_for(
    batch: audit_pb2.Batch,
    verdict: integrity.BatchVerdict,
    findings: Sequence[integrity.Finding],
    *,
    agent_id: str,
    key: Ed25519PrivateKey | None,
    received_unix_nano: int,
) -> audit_pb2.Receipt | None:
    """The signed receipt for an OK ack of `batch`, or None (see the module docstring)."""
    if (
        key is None
        or batch.format_version != integrity.FORMAT_V2
        or not batch.HasField("seal")
        or not verdict.authentic
        or any(f.kind == FORK for f in findings)
    ):
        return None
    seal = batch.seal
    receipt = audit_pb2.Receipt(
        agent_id=agent_id,
        stream_id=seal.stream_id,
        last_sequence=seal.last_sequence,
        head=verdict.hashes[-1] if verdict.hashes else seal.chain_head,
        received_unix_nano=received_unix_nano,
    )
    integrity.sign_receipt(receipt, key)
    return receipt
