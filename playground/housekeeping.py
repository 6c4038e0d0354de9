"""Giving memory back: a long-running app returns the heap its floods freed.

Owns: the thread that, once the app has been quiet for a second after some work (and at most
every `MIN_GAP_S`), collects Python's cyclic garbage and asks glibc to return free heap pages
to the system (`malloc_trim`).
Does not own: what the app keeps on purpose (sessions: `ui.guard`; the KV cache: `engines`).

Why: glibc keeps what a thread freed in that thread's arena for reuse, and Gradio serves each
event on a worker thread of its own, so a flood of large requests (1 MB bodies, long histories)
left the app's RSS 48% up long after every byte was freed (issue 34's soak: 197 -> 293 MiB).
Python frees cycles only when new allocations trigger a collection, which an idle app never
makes. Both steps cost milliseconds, and wait for a quiet moment, so no reply waits on the
collector (it holds the GIL).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import threading
import time
from collections.abc import Callable
from functools import cache

MIN_GAP_S = 10.0
POLL_S = 1.0


@cache  # find_library runs ldconfig in a subprocess: once per process is enough
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library is another (macOS, musl)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None  # CDLL calls drop the GIL
    except (OSError, AttributeError):
        return None


def give_back() -> bool:
    """Collect cyclic garbage, then return free heap pages to the system. Returns whether the
    C library could (glibc only)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def keep_tidy(
    busy: Callable[[], bool], work: Callable[[], int], min_gap_s: float = MIN_GAP_S
) -> threading.Event:
    """`give_back` once a poll finds the app quiet after work: `busy()` false (the engine
    idle) and `work()`, a count of the work taken in (events admitted), unchanged since the
    last poll. At most once every `min_gap_s`. Returns the event that ends the thread."""
    done = threading.Event()

    def run() -> None:
        seen, owed, last = work(), False, -min_gap_s
        while not done.wait(POLL_S):
            now = work()
            if busy() or now != seen:
                seen, owed = now, True
            elif owed and time.monotonic() - last >= min_gap_s:
                give_back()
                owed, last = False, time.monotonic()

    threading.Thread(target=run, name="housekeeping", daemon=True).start()
    return done
