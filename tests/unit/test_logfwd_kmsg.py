"""/dev/kmsg records as the kernel writes them, parsed and turned into syslog messages.

The samples are real shapes (Documentation/ABI/testing/dev-kmsg); the host's /dev/kmsg is
never read here.
"""

from __future__ import annotations

import socket
import threading

import pytest

from kurma.logfwd._kmsg import KmsgRecord, kernel_message, parse_record, unescape
from kurma.logfwd._rfc5424 import SD_ID, format_message
from kurma.logfwd._sources import KmsgSource

from ..waiting import wait_for


def test_plain_record() -> None:
    r = parse_record(b"6,339,5140900,-;NET: Registered PF_INET6 protocol family\n")
    assert (r.facility, r.severity, r.seq, r.ts_usec, r.flags) == (0, 6, 339, 5140900, "-")
    assert r.message == "NET: Registered PF_INET6 protocol family"
    assert r.fields == {}


def test_continuation_lines_become_fields() -> None:
    record = (
        b"3,1045,31712345,-;e1000e 0000:00:19.0 eth0: link down\n"
        b" SUBSYSTEM=pci\n"
        b" DEVICE=+pci:0000:00:19.0\n"
    )
    r = parse_record(record)
    assert r.severity == 3
    assert r.message == "e1000e 0000:00:19.0 eth0: link down"
    assert r.fields == {"SUBSYSTEM": "pci", "DEVICE": "+pci:0000:00:19.0"}


def test_escaped_bytes_are_restored() -> None:
    """The kernel writes \\xNN for control bytes, non-ASCII and the backslash itself."""
    r = parse_record(b"4,7,100,-;line one\\x0aline two \\x5c tab\\x09 \\xc3\\xa4\n")
    assert r.message == "line one\nline two \\ tab\t ä"
    assert unescape(b"\\x41\\x4a\\xzz") == b"AJ\\xzz"  # only two hex digits count


def test_facility_from_pri_and_extra_prefix_fields() -> None:
    """Userspace writes to /dev/kmsg keep their facility (daemon = 3 -> PRI 30); a
    caller field after FLAGS (CONFIG_PRINTK_CALLER) is ignored."""
    r = parse_record(b"30,12,2000000,c,caller=T1;systemd-udevd: starting\n")
    assert (r.facility, r.severity, r.flags) == (3, 6, "c")
    assert r.message == "systemd-udevd: starting"


@pytest.mark.parametrize(
    "record, problem",
    [
        (b"6,1,2,- no semicolon\n", "without ';'"),
        (b"6,1;message\n", "needs PRI,SEQ,TS_USEC,FLAGS"),
        (b"x,1,2,-;message\n", "must be numbers"),
        (b"6,1,2,-;message\nDEVICE=x\n", "does not start with a space"),
    ],
)
def test_malformed_records_say_why(record: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_record(record)


def test_kernel_message() -> None:
    """APP-NAME kernel, the record's own PRI, time = boot + TS_USEC, seq and fields in SD."""
    r = parse_record(b"3,1045,1500000,-;disk error\n SUBSYSTEM=block\n")
    m = kernel_message(r, hostname="node1", booted=1_000_000_000.0)
    assert (m.facility, m.severity, m.app_name, m.msg) == (0, 3, "kernel", "disk error")
    assert m.timestamp == 1_000_000_001.5
    data = format_message(m)
    assert data == (
        b"<3>1 2001-09-09T01:46:41.500000Z node1 kernel - - "
        b"[" + SD_ID.encode() + b' kseq="1045" subsystem="block"] disk error'
    )


def test_reader_takes_one_record_per_read_and_skips_bad_ones() -> None:
    """The reader on a record-preserving descriptor (a SEQPACKET pair stands in for the
    device): each record parsed once, a malformed one skipped, `stop` ends it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    got: list[KmsgRecord] = []
    stop = threading.Event()
    source = KmsgSource(got.append, stop, path="/nonexistent")
    ours.setblocking(False)
    reader = threading.Thread(target=source.follow, args=(ours.fileno(),))
    try:
        reader.start()
        theirs.send(b"6,1,10,-;first\n")
        theirs.send(b"garbage without prefix\n")
        theirs.send(b"3,2,20,-;second\\x0athird\n SUBSYSTEM=net\n")
        wait_for(lambda: len(got) >= 2, "two records")
    finally:
        stop.set()
        reader.join(5)
        ours.close()
        theirs.close()
    assert not reader.is_alive()
    assert [(r.seq, r.message, r.fields) for r in got] == [
        (1, "first", {}),
        (2, "second\nthird", {"SUBSYSTEM": "net"}),
    ]


def test_reader_reports_a_missing_device() -> None:
    """No /dev/kmsg (a path that does not exist): the source logs and ends, nothing else."""
    source = KmsgSource(lambda r: None, threading.Event(), path="/nonexistent/kmsg").start()
    source.thread.join(5)
    assert not source.thread.is_alive()
