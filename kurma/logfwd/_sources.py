"""The kernel log source: /dev/kmsg from its oldest kept record on, as it grows.

A fresh descriptor on /dev/kmsg starts at the oldest record the kernel still holds, so the
boot messages are forwarded too. Each read(2) returns exactly one record (the buffer must
hold the longest: 8 KiB is more than the kernel's limit). EPIPE means the ring overwrote
records we had not read yet: the next read goes on from the oldest still there. The
descriptor is non-blocking and waited on with poll, so `stop` is noticed within `POLL`.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
from collections.abc import Callable

from ._kmsg import KmsgRecord, parse_record

log = logging.getLogger(__name__)

KMSG = "/dev/kmsg"
RECORD_MAX = 8192
POLL = 0.5


class KmsgSource:
    """Reads /dev/kmsg in a thread and hands each parsed record to `emit`."""

    def __init__(
        self, emit: Callable[[KmsgRecord], None], stop: threading.Event, path: str = KMSG
    ) -> None:
        self.emit = emit
        self.stop = stop
        self.path = path
        self.overwritten = 0  # times the ring overwrote unread records
        self.thread = threading.Thread(target=self.run, name="kmsg", daemon=True)

    def start(self) -> KmsgSource:
        self.thread.start()
        return self

    def run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            log.error("kernel log: cannot open %s: %s; not forwarding it", self.path, e)
            return
        log.info("kernel log: forwarding %s", self.path)
        try:
            self.follow(fd)
        finally:
            os.close(fd)

    def follow(self, fd: int) -> None:
        """Read records from the non-blocking `fd` (one per read) until `stop` is set."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while not self.stop.is_set():
            try:
                record = os.read(fd, RECORD_MAX)
            except BlockingIOError:
                poller.poll(POLL * 1000)
                continue
            except OSError as e:
                if e.errno == errno.EPIPE:
                    self.overwritten += 1
                    log.warning("kernel log: records were overwritten before they were read")
                    continue
                log.error("kernel log: reading %s failed: %s; stopping", self.path, e)
                return
            if not record:  # end of file: this is not the kmsg device
                log.error("kernel log: %s ended; it is not /dev/kmsg", self.path)
                return
            try:
                self.emit(parse_record(record))
            except ValueError as e:
                log.warning("kernel log: skipping a record: %s", e)
