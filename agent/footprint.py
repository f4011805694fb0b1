"""Process-wide memory and garbage-collector settings of a running agent.

Both are measured choices for a small, long-running process with a handful of threads
(read, feed, ship, grpc's own), see README "Agent stages and memory":

- glibc gives each thread that contends for malloc its own arena (up to 8 per core),
  and freed chunks of one arena are not reused by another: under load the agent's
  resident memory grew by several MiB of such per-thread arenas. Two arenas are
  enough for three busy Python threads that mostly hold the GIL anyway.
- Everything allocated at start-up (the modules of grpc, protobuf, pydantic, the
  validated config) lives as long as the process; `gc.freeze()` moves it out of the
  collector's generations, so full collections under load no longer walk it.
- A read pass allocates a few thousand short-lived containers (decoded records, events,
  entries); with the default young-generation threshold of 700 the collector ran ~7
  times per 1,000 events, mostly scanning objects about to die anyway.
"""

from __future__ import annotations

import ctypes
import gc
import logging

log = logging.getLogger(__name__)

MALLOC_ARENAS = 2
GC_YOUNG_THRESHOLD = 5000  # allocations between young collections (Python's default: 700)
_M_ARENA_MAX = -8  # glibc <malloc.h>


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (call before threads start); False where there is no glibc
    mallopt (musl, other platforms), which changes nothing but the memory use."""
    try:
        # The interpreter's own symbols, libc's among them: no library search (which
        # would run ldconfig in a subprocess at every start).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_ARENA_MAX, arenas) != 1:
        log.debug("mallopt(M_ARENA_MAX, %d) refused", arenas)
        return False
    return True


def settle_after_startup() -> None:
    """Exclude what exists now (start-up's modules and objects) from future collections
    and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
