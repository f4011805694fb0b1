"""collector.gctune: the serving process's cyclic GC cadence."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from collector.gctune import GEN0_THRESHOLD, tune_for_serving


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_serving_freezes_start_up_objects_and_collects_less_often() -> None:
    _, gen1, gen2 = gc.get_threshold()
    tune_for_serving()
    assert gc.get_threshold() == (GEN0_THRESHOLD, gen1, gen2)
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restored_gc")
def test_cycles_made_after_tuning_are_still_collected() -> None:
    tune_for_serving()

    class Node:
        pass

    node = Node()
    node.self = node  # type: ignore[attr-defined]
    alive = weakref.ref(node)
    del node
    assert alive() is not None  # only the cyclic collector frees it
    gc.collect()
    assert alive() is None
