"""Fixtures shared by the agent's tail tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.tail import FileTailer


@pytest.fixture
def tailers() -> Iterator[list[FileTailer]]:
    """Every FileTailer a test appends here is closed when the test ends."""
    made: list[FileTailer] = []
    yield made
    for t in made:
        t.close()
