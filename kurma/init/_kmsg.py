"""PID 1's log lines into the kernel log (/dev/kmsg), beside the console.

The console shows a boot to whoever watches it; the kernel log is what the `syslog` service
forwards, so PID 1's lines go there too: `<6>kurma-init: message` (the syslog priority in
angle brackets, as /dev/kmsg expects). Writes to /dev/kmsg are rate limited by default
(printk_devkmsg=ratelimit); PID 1 turns that off, or a busy boot would lose its own lines.
"""

from __future__ import annotations

import contextlib
import logging
import os

KMSG = "/dev/kmsg"
PRINTK_DEVKMSG = "/proc/sys/kernel/printk_devkmsg"
PRINTK = "/proc/sys/kernel/printk"
_MAX_LINE = 960  # the kernel cuts a record at 1024 bytes, prefix included


def syslog_priority(levelno: int) -> int:
    """logging level -> syslog severity (3 err, 4 warning, 6 info, 7 debug); facility user."""
    if levelno >= logging.CRITICAL:
        severity = 2
    elif levelno >= logging.ERROR:
        severity = 3
    elif levelno >= logging.WARNING:
        severity = 4
    elif levelno >= logging.INFO:
        severity = 6
    else:
        severity = 7
    return (1 << 3) | severity  # facility 1: user-level, so the kernel's own stay apart


class KmsgHandler(logging.Handler):
    """Writes each record as one /dev/kmsg record `<PRI>kurma-init: message`."""

    def __init__(self, path: str = KMSG, tag: str = "kurma-init") -> None:
        super().__init__()
        self.tag = tag
        self.fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().split("\n"))[:_MAX_LINE]
            line = f"<{syslog_priority(record.levelno)}>{self.tag}: {text}\n"
            os.write(self.fd, line.encode("utf-8", "replace"))
        except Exception:  # a full or closed kmsg must never end PID 1
            self.handleError(record)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        super().close()


def allow_kmsg_writes(path: str = PRINTK_DEVKMSG) -> None:
    """printk_devkmsg=on: the kernel keeps every line userspace writes (no rate limit)."""
    with open(path, "w") as f:
        f.write("on\n")


def set_console_loglevel(level: int, path: str = PRINTK) -> None:
    """Kernel records below `level` (more severe) reach the console; one number sets only that."""
    with open(path, "w") as f:
        f.write(f"{level}\n")


def log_to_kmsg(logger_name: str = "kurma", path: str = KMSG) -> KmsgHandler:
    """Add a KmsgHandler to `logger_name`; returns it (tests remove and close it)."""
    handler = KmsgHandler(path)
    logging.getLogger(logger_name).addHandler(handler)
    return handler
