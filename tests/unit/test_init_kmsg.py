"""PID 1's log lines in /dev/kmsg's format (written to a plain file here)."""

from __future__ import annotations

import logging
from pathlib import Path

from kurma.init._kmsg import KmsgHandler, syslog_priority


def test_records_become_kmsg_lines(tmp_path: Path) -> None:
    """`<PRI>kurma-init: message`, one record a line, newlines folded."""
    path = tmp_path / "kmsg"
    path.write_text("")
    logger = logging.getLogger("kurma.test.kmsg")
    logger.propagate = False
    handler = KmsgHandler(str(path))
    logger.addHandler(handler)
    try:
        logger.warning("disk %s: %s", "LABEL=data", "not found")
        logger.error("two\nlines")
        logger.info("info")  # the logger's level (WARNING by default) decides
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert path.read_text().splitlines() == [
        "<12>kurma-init: disk LABEL=data: not found",
        "<11>kurma-init: two lines",
    ]


def test_priorities_are_user_facility() -> None:
    assert [syslog_priority(x) for x in (10, 20, 30, 40, 50)] == [15, 14, 12, 11, 10]
