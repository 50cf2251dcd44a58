"""Retry delays: the one backoff policy of the tree.

A frozen policy, no state: the caller counts its quick failures in a row and asks for the
delay (`delay(n)`), and starts the count again after a success, or after a run that lasted
`reset_after` s. PID 1's kurmad supervisor, kurmad's service supervisor and the log
forwarder all use it, so "1 s doubling up to a minute" means the same thing everywhere and
a fake clock tests every one of them without sleeping.

Pure stdlib: every layer imports it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before retry n of quick failures in a row: initial * factor**(n-1), capped at
    maximum. `reset`: how long a run must last to end the count (None: min(60, 2 * maximum))."""

    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    reset: float | None = None

    def delay(self, failures: int) -> float:
        """The wait after `failures` quick failures in a row (1: the first; 0: none)."""
        if failures <= 0:
            return 0.0
        # Cap the exponent: factor**1000 overflows a float long before anyone waits that long.
        return min(self.maximum, self.initial * self.factor ** min(failures - 1, 64))

    @property
    def reset_after(self) -> float:
        """A run this long was not a quick failure: the count starts again."""
        return min(60.0, 2 * self.maximum) if self.reset is None else self.reset
