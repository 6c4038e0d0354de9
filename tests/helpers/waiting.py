"""Waiting on a condition, bounded: a test that waits never hangs."""

import time

import pytest


def wait_until(condition, seconds=60.0, what="condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")
