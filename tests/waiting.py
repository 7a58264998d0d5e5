"""Waiting for something to become true, with a test failure naming it when it does not."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def wait_settled(read: Callable[[], Any], every_s: float, timeout: float = 30.0, what: str = "value") -> Any:
    """`read()` once two looks `every_s` apart agree (what is in flight has landed); fail the
    test if it keeps changing for `timeout`. `every_s` should exceed the time things take to
    land (the bridge writes within its write interval, 1 s by default)."""
    values = [read()]

    def settled() -> bool:
        time.sleep(every_s)
        values.append(read())
        return bool(values[-1] == values[-2])

    wait_until(settled, timeout, f"{what} to settle")
    return values[-1]
