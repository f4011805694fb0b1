"""`bench.search.wait_for_count` polls once a second, then finely near the target, so a
shipper's elapsed time is not up to a whole poll late (the ceiling's is not)."""

from __future__ import annotations

from typing import Any

import pytest

from bench import search


class GrowingIndex:
    """A stand-in client whose count grows by `step` per poll (refresh does nothing)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.seen = 0
        self.indices = self

    def refresh(self, **_: Any) -> None:
        return None

    def count(self, **_: Any) -> dict[str, int]:
        self.seen += self.step
        return {"count": self.seen}


def test_polls_finely_once_most_documents_are_searchable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(search.time, "sleep", sleeps.append)
    index = GrowingIndex(step=100)
    search.wait_for_count(
        index,  # type: ignore[arg-type]
        "events",
        1000,
        started=search.time.monotonic(),
        timeout=60,
    )
    # seen 100 .. 800: below 90 % of 1000, a second apart; 900: a tenth; 1000: done
    assert sleeps == [1.0] * 8 + [0.1]
