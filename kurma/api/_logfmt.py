"""kurmad's log lines: `key=value` pairs that a person reads and a machine splits.

    time=2024-05-01T12:00:00.123Z level=info logger=kurma.api msg="pod started" pod=web

Modules log with %-style arguments as usual; structured fields come through
`extra={"kv": {...}}` (see `fields`). Values with spaces, quotes or '=' are quoted.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@,+")


def quote(value: object) -> str:
    text = str(value)
    if text and set(text) <= _PLAIN:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def fields(**kv: object) -> dict[str, Mapping[str, object]]:
    """`extra=` for a log call: `log.info("pod started", extra=fields(pod=name))`."""
    return {"kv": kv}


class KeyValueFormatter(logging.Formatter):
    """One line per record: time, level, logger, msg, then the record's `kv` fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"time={stamp}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"msg={quote(record.getMessage())}",
        ]
        extra = getattr(record, "kv", None)
        if isinstance(extra, Mapping):
            parts.extend(f"{k}={quote(v)}" for k, v in extra.items() if v is not None)
        if record.exc_info:
            parts.append(f"error={quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


def setup_logging(level: int) -> None:
    """Log to stderr (the journal under systemd), replacing any earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
