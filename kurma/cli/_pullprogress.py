"""Per-layer progress of a pull on stderr, in docker's shape.

On a terminal: one line per layer (`a1b2c3d4e5f6: Downloading [####----] 1.2 / 3.4 MiB`),
redrawn in place with the cursor moved up over them. Otherwise (a log, CI): one line each
time a layer changes state, so a log reads as a short story, not a line per chunk.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from ._output import human_size

BAR_WIDTH = 20
_STATES = {
    "waiting": "Waiting",
    "exists": "Already exists",
    "downloading": "Downloading",
    "downloaded": "Download complete",
    "applying": "Extracting",
    "done": "Pull complete",
}


class LayerBars:
    """Feed it each ImportProgress of a Fetch; `finish()` at the end."""

    def __init__(self, label: str, out: IO[str] | None = None, tty: bool | None = None) -> None:
        self.label = label
        self.out = sys.stderr if out is None else out
        self.tty = self.out.isatty() if tty is None else tty
        self._drawn = 0
        self._states: dict[int, str] = {}
        self._said_start = False

    def update(self, progress: Any) -> None:
        layers = list(progress.layers)
        if not self._said_start and layers:
            self._said_start = True
            self.out.write(f"{self.label}: pulling {len(layers)} layers\n")
        if self.tty:
            self._draw(layers)
        else:
            for layer in layers:
                if self._states.get(layer.index) != layer.state:
                    self._states[layer.index] = layer.state
                    if layer.state in ("downloading", "applying", "waiting"):
                        continue  # the ends of each step are enough in a log
                    self.out.write(self.line(layer) + "\n")
        self.out.flush()

    @staticmethod
    def line(layer: Any) -> str:
        short = layer.digest.split(":", 1)[-1][:12]
        state = _STATES.get(layer.state, layer.state)
        if layer.state != "downloading" or not layer.size:
            return f"{short}: {state}"
        filled = BAR_WIDTH * min(layer.done, layer.size) // layer.size
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return f"{short}: {state} [{bar}] {human_size(layer.done)} / {human_size(layer.size)}"

    def _draw(self, layers: list[Any]) -> None:
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F")  # to the start of the first drawn line
        for layer in layers:
            self.out.write("\x1b[2K" + self.line(layer) + "\n")
        self._drawn = len(layers)

    def finish(self) -> None:
        self.out.flush()
