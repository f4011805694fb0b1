"""The cyclic garbage collector's settings for the serving collector process.

Each event becomes about fifteen small dicts and lists (its document), none of them in a
reference cycle. With Python's default first-generation threshold (700 allocations) the
cyclic collector ran every ~50 events, and each older-generation pass walked every
batch in flight and every object loaded at start-up: in-process, 14 µs of the ~40 µs a
format 2 event's documents cost (bench/v2path.py style loop, gc on vs off). Only the
serving process is tuned (`crm-audit-collector run`), not a library user's process.
"""

from __future__ import annotations

import gc

#: Allocations between first-generation passes: a few batches' documents, not 50 events.
GEN0_THRESHOLD = 20_000


def tune_for_serving() -> None:
    """Move what start-up created (modules, config, clients) out of the collector's
    reach for good, and collect the young generation less often. Cycles are still found:
    only the cadence changes."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
