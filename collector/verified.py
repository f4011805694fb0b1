"""Chain heads this collector verified itself: what its checkpoints and receipts sign.

A head enters only from an authentic seal (the agent's signature checked with a key
registered for it, the head recomputed over the received events), never from a chain
head document read back from OpenSearch: anyone who can write there could otherwise get
a forged head signed by the collector. On start the map is seeded from the collector's
own last checkpoint line, once its signature checks with the collector's own key.

Keys are (agent, stream): stream "" is an agent's format 1 chain.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

StreamKey = tuple[str, str]
Head = tuple[int | None, bytes]  # (last sequence, None before any event; head)


class VerifiedHeads:
    """Per chain the highest verified head; thread-safe (streams run in parallel)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._heads: dict[StreamKey, Head] = {}

    def record(self, agent_id: str, stream_id: str, sequence: int | None, head: bytes) -> None:
        """Keep (sequence, head) unless a higher sequence is known already: a delayed
        heartbeat or a re-delivered older range never moves a head back."""
        key = (agent_id, stream_id)
        with self._lock:
            known = self._heads.get(key)
            if (
                known is not None
                and known[0] is not None
                and (sequence is None or sequence < known[0])
            ):
                return
            self._heads[key] = (sequence, head)

    def seed(self, heads: Mapping[StreamKey, Head]) -> None:
        for (agent_id, stream_id), (sequence, head) in heads.items():
            self.record(agent_id, stream_id, sequence, head)

    def snapshot(self) -> dict[StreamKey, Head]:
        with self._lock:
            return dict(self._heads)
