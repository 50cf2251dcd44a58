"""PID 1's console lines: `[   1.234] kurma-init: ...`, seconds since PID 1 started.

The console is the only place a boot failure can be read before kurmad and the log forwarder
run, so every line is flushed as it is written.
"""

from __future__ import annotations

import logging
import time
from typing import TextIO

_START = time.monotonic()


def since_start() -> float:
    """Seconds since this module was imported (PID 1's first moments)."""
    return time.monotonic() - _START


class ConsoleFormatter(logging.Formatter):
    """`[   1.234] kurma-init: message` (warnings and errors say so)."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        text = f"[{since_start():8.3f}] kurma-init: {level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_console_logging(stream: TextIO, level: int = logging.INFO) -> logging.Handler:
    """Send the `kurma` loggers to `stream`; returns the handler (tests remove it again)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ConsoleFormatter())
    logger = logging.getLogger("kurma")
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
