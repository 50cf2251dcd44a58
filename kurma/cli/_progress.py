"""Progress of an upload or a fetch, on stderr (stdout keeps the result for scripts).

On a terminal: one line redrawn with \\r, a bar, the percentage, bytes and the rate.
Otherwise (a log, CI): a plain line at every 10% (every 10 MiB when the size is unknown),
so that a log shows it is moving without a line per chunk.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO

from ._output import human_size

BAR_WIDTH = 24
STEP_PERCENT = 10
STEP_BYTES_UNKNOWN = 10 << 20


class Progress:
    """Call it with (done, total) as bytes go (total 0: unknown); `finish()` at the end."""

    def __init__(
        self,
        label: str,
        out: IO[str] | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.out = sys.stderr if out is None else out
        self.tty = self.out.isatty() if tty is None else tty
        self.clock = clock
        self.started = clock()
        self.done = self.total = 0
        self._last_step = -1
        self._drawn = 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.tty:
            self._draw()
            return
        step = done * 100 // total // STEP_PERCENT if total else done // STEP_BYTES_UNKNOWN
        if step > self._last_step:
            self._last_step = step
            self.out.write(self.line() + "\n")
            self.out.flush()

    def line(self) -> str:
        """'busybox.aci  45%  12.3 MiB / 27.1 MiB  5.1 MiB/s' (no bar, no percentage when
        the total is unknown)."""
        elapsed = max(self.clock() - self.started, 1e-6)
        rate = f"{human_size(int(self.done / elapsed))}/s"
        if not self.total:
            return f"{self.label}  {human_size(self.done)}  {rate}"
        percent = min(100, self.done * 100 // self.total)
        amount = f"{human_size(self.done)} / {human_size(self.total)}"
        if not self.tty:
            return f"{self.label}  {percent:3d}%  {amount}  {rate}"
        filled = BAR_WIDTH * percent // 100
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return f"{self.label}  [{bar}] {percent:3d}%  {amount}  {rate}"

    def _draw(self) -> None:
        text = self.line()
        pad = " " * max(0, self._drawn - len(text))  # wipe the tail of a longer line
        self.out.write("\r" + text + pad)
        self.out.flush()
        self._drawn = len(text)

    def finish(self) -> None:
        """End the terminal's line (so the result starts on a fresh one)."""
        if self.tty and self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = 0
