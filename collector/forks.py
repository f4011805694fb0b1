"""Forks: a re-delivered stream format 2 event whose bytes differ from the stored one.

Every event is created with its deterministic ``_id`` (`collector.index`), so a second
event with the same agent, stream and sequence answers 409. Counting it as delivered
would drop it silently when its content differs (an agent restored from an old backup,
a bug, or a forged re-delivery by the key holder). So for each 409 of a format 2 batch
the stored document's ``integrity.event_hash`` is read (``_mget``: real time, so a copy
indexed a moment ago by a pipelined batch is seen too) and compared with the received
event's hash. A differing event is never dropped: its document goes to
``{prefix}-forks`` (same layout as the events, ``_id`` = the original ``_id`` + ":" +
its event hash[:16], so a re-delivery of the same fork is a 409 again), and the batch
gets one ``fork`` alert naming the sequences. The stored document stays as it is.

Not covered here: a differing event whose effective time falls into another index than
the stored one's (another month) is no 409; it is created in that index, and the
chain head continuity check alerts ``fork`` when the heads differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from collector.errors import RetryableIndexingError
from collector.gate import FORK, event_integrity_fields, forks_index
from collector.index import IndexRequest, Requester
from proto import integrity


def received_hash(request: IndexRequest) -> str:
    value = request.document().get("integrity", {}).get("event_hash", "")
    return str(value)


class ForkCheck:
    """Compares 409s of a format 2 batch with the stored documents."""

    def __init__(self, request: Requester, prefix: str) -> None:
        self.request = request
        self.index = forks_index(prefix)

    def stored_hashes(self, conflicts: Sequence[IndexRequest]) -> dict[tuple[str, str], str]:
        """(index, _id) -> stored event hash, for the documents still there."""
        response = self.request(
            "POST",
            "/_mget",
            body={
                "docs": [
                    {"_index": r.index, "_id": r.doc_id, "_source": ["integrity.event_hash"]}
                    for r in conflicts
                ]
            },
        )
        if response.status != 200 or not isinstance(response.body, dict):
            # Passing them unseen could drop a fork: the batch is retried instead.
            raise RetryableIndexingError(
                f"cannot compare {len(conflicts)} re-delivered events with the stored ones: "
                f"HTTP {response.status}"
            )
        found: dict[tuple[str, str], str] = {}
        for doc in response.body.get("docs", []):
            if doc.get("found"):
                stored = doc.get("_source", {}).get("integrity", {}).get("event_hash", "")
                found[(str(doc.get("_index")), str(doc.get("_id")))] = str(stored)
        return found

    def forks(
        self,
        conflicts: Sequence[IndexRequest],
        signed: Mapping[tuple[str, str], bytes] | None = None,
    ) -> tuple[list[IndexRequest], list[integrity.Finding]]:
        """The fork documents to write and the batch's `fork` finding (if any).

        `signed`: (index, _id) -> the event's bytes, for documents that do not carry
        them (stored per batch, `collector.batchbytes`): a fork document carries its
        own, as it is written alone, outside any batch document."""
        if not conflicts:
            return [], []
        stored = self.stored_hashes(conflicts)
        writes: list[IndexRequest] = []
        for req in conflicts:
            mine = received_hash(req)
            theirs = stored.get((req.index, req.doc_id))
            # Not found any more (deleted since): nothing to compare with. Stored without
            # a hash: not a format 2 document, which cannot share a format 2 _id.
            if not mine or not theirs or theirs == mine:
                continue
            data = (signed or {}).get((req.index, req.doc_id))
            source, body = req.source, req.body
            if data is not None:
                source, body = with_inline_bytes(req.document(), data), b""
            writes.append(
                IndexRequest(
                    self.index,
                    f"{req.doc_id}:{mine[:16]}",
                    source,
                    agent_id=req.agent_id,
                    sequence=req.sequence,
                    original=req.original,
                    body=body,
                )
            )
        if not writes:
            return [], []
        sequences = sorted(w.sequence for w in writes)
        stream = writes[0].document().get("agent", {}).get("stream", "")
        finding = integrity.Finding(
            FORK,
            sequences[0],
            sequences[-1],
            f"{len(writes)} re-delivered events of stream {stream} differ from the stored "
            f"ones with the same sequence ({_runs(sequences)}); the stored ones were kept, "
            f"the received ones are in {self.index}",
        )
        return writes, [finding]


def with_inline_bytes(document: Mapping[str, Any], data: bytes) -> dict[str, Any]:
    """A copy of `document` carrying its event's bytes (``integrity.canonical``)."""
    copy = dict(document)
    stored = copy.get("integrity")
    copy["integrity"] = {
        **(stored if isinstance(stored, Mapping) else {}),
        **event_integrity_fields(data, None),
    }
    return copy


def _runs(sequences: Sequence[int]) -> str:
    """1,2,3,7 -> '1-3, 7' (at most 10 runs named)."""
    runs: list[tuple[int, int]] = []
    for seq in sequences:
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    text = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs[:10])
    return text + (f", ... ({len(runs)} runs)" if len(runs) > 10 else "")
