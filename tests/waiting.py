"""Polling helper for tests that watch a trainer subprocess through its run directory."""

import time


def wait_for(predicate, timeout: float, what: str):
    """The first truthy value of `predicate()` within `timeout` seconds; fails the test otherwise."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
