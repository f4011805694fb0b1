"""agent.footprint: the process settings `crm-audit-agent run` applies at start-up."""

from __future__ import annotations

import gc
import platform
import subprocess
import sys

import pytest

from agent import footprint


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_malloc_arenas_are_capped_on_glibc() -> None:
    # In a child, so this test process keeps its allocator as it is.
    code = "from agent import footprint; print(footprint.limit_malloc_arenas())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "True"


def test_startup_heap_is_frozen_and_young_collections_are_rarer() -> None:
    before, thresholds = gc.get_freeze_count(), gc.get_threshold()
    try:
        footprint.settle_after_startup()
        assert gc.get_freeze_count() > before
        assert len(gc.get_objects()) < gc.get_freeze_count()
        assert gc.get_threshold() == (footprint.GC_YOUNG_THRESHOLD, *thresholds[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
