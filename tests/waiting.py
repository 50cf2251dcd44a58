"""The one poll-until helper of the test tree: poll with a deadline instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T],
    what: str = "condition",
    timeout: float = 10.0,
    *,
    every: float = 0.02,
) -> T:
    """Call `check` until it returns something true, and return that; AssertionError naming
    `what` (and the last value) once `timeout` seconds have passed (`check` runs at least
    once, however short the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{_last(value)}")
        time.sleep(every)


def _last(value: Any) -> str:
    return "" if value is None or value is False else f" (last: {value!r})"
