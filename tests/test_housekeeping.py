"""Housekeeping: memory a thread freed goes back to the system, and only while the engine idles."""

import threading
import time

import psutil

from playground import housekeeping
from tests.helpers.waiting import wait_until

MB = 2**20


def test_give_back_returns_what_a_worker_thread_freed():
    # As a flood of 1 MB requests on Gradio's worker threads left it: a thread's own arena, all
    # but one block in a hundred freed, so the heap's top cannot shrink by itself.
    process, kept = psutil.Process(), []

    def flood():
        blocks = [bytearray(64 * 1024) for _ in range(2000)]  # 125 MiB
        kept.extend(blocks[::100])

    worker = threading.Thread(target=flood)
    worker.start()
    worker.join()
    held = process.memory_info().rss
    assert housekeeping.give_back()  # glibc, as on a Space
    given = held - process.memory_info().rss
    print(f"gave back {given / MB:.0f} of the 124 MiB freed")
    assert given > 100 * MB


def tidy_calls(monkeypatch) -> list[float]:
    calls: list[float] = []
    monkeypatch.setattr(housekeeping, "POLL_S", 0.01)
    monkeypatch.setattr(housekeeping, "give_back", lambda: calls.append(time.monotonic()))
    return calls


def test_tidying_waits_for_the_engine_to_idle(monkeypatch):
    calls, busy = tidy_calls(monkeypatch), threading.Event()
    busy.set()
    done = housekeeping.keep_tidy(busy.is_set, work=lambda: 0, min_gap_s=0)
    try:
        time.sleep(0.2)
        assert calls == []  # never while the engine works
        busy.clear()
        wait_until(lambda: len(calls) == 1, seconds=2, what="a tidy as the engine idles")
        time.sleep(0.2)
        assert len(calls) == 1  # once: nothing was done since
    finally:
        done.set()


def test_a_burst_of_other_work_is_tidied_once_quiet_at_most_every_gap(monkeypatch):
    # Refused bodies and renders never reach the engine: the count of admitted events shows them.
    calls, admitted = tidy_calls(monkeypatch), [0]
    done = housekeeping.keep_tidy(lambda: False, work=lambda: admitted[0], min_gap_s=0.5)
    try:
        time.sleep(0.1)
        assert calls == []  # no work yet: nothing to give back
        for _ in range(20):  # a burst: never quiet for a poll
            admitted[0] += 1
            time.sleep(0.002)
        wait_until(lambda: len(calls) == 1, seconds=2, what="a tidy once quiet")
        admitted[0] += 1  # more work at once: its tidy waits out the gap
        wait_until(lambda: len(calls) == 2, seconds=2, what="the second tidy")
    finally:
        done.set()
    assert calls[1] - calls[0] >= 0.5
