"""/dev/kmsg records (Documentation/ABI/testing/dev-kmsg) and their syslog form.

One read(2) returns one record:

    PRI,SEQ,TS_USEC,FLAGS[,MORE...];MESSAGE\\n
     KEY=VALUE\\n            (zero or more continuation lines, each starting with a space)

PRI holds the facility (upper bits) and the severity (lower three); TS_USEC is microseconds
since boot. The kernel escapes bytes outside printable ASCII, and the backslash, as `\\xNN`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from ._rfc5424 import SD_ID, Message

_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


@dataclass(frozen=True)
class KmsgRecord:
    """One kernel log record, its message unescaped."""

    facility: int
    severity: int
    seq: int
    ts_usec: int
    flags: str
    message: str
    fields: dict[str, str] = field(default_factory=dict)  # SUBSYSTEM=, DEVICE=, ...


def unescape(data: bytes) -> bytes:
    """Undo the kernel's `\\xNN` escapes."""
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data)


def _text(data: bytes) -> str:
    return unescape(data).decode("utf-8", "replace")


def parse_record(record: bytes) -> KmsgRecord:
    """Parse one record as read from /dev/kmsg; ValueError says what is malformed."""
    head, sep, rest = record.partition(b";")
    if not sep:
        raise ValueError(f"kmsg record without ';' after its prefix: {record[:60]!r}")
    prefix = head.split(b",")
    if len(prefix) < 4:
        raise ValueError(f"kmsg prefix {head!r} needs PRI,SEQ,TS_USEC,FLAGS")
    try:
        pri, seq, ts_usec = (int(x) for x in prefix[:3])
    except ValueError:
        raise ValueError(f"kmsg prefix {head!r}: PRI, SEQ and TS_USEC must be numbers") from None
    if pri < 0 or seq < 0 or ts_usec < 0:
        raise ValueError(f"kmsg prefix {head!r}: negative number")
    lines = rest.rstrip(b"\n").split(b"\n")
    fields = {}
    for line in lines[1:]:
        if not line.startswith(b" "):
            raise ValueError(f"kmsg continuation line {line[:60]!r} does not start with a space")
        key, eq, value = line[1:].partition(b"=")
        if eq:
            fields[_text(key)] = _text(value)
    return KmsgRecord(
        facility=min(pri >> 3, 23),
        severity=pri & 7,
        seq=seq,
        ts_usec=ts_usec,
        flags=prefix[3].decode("ascii", "replace"),
        message=_text(lines[0]),
        fields=fields,
    )


def boot_time() -> float:
    """Wall-clock time of boot as the kernel's log clock counts it (CLOCK_MONOTONIC)."""
    return time.time() - time.clock_gettime(time.CLOCK_MONOTONIC)


def kernel_message(record: KmsgRecord, *, hostname: str, booted: float) -> Message:
    """The record as syslog: APP-NAME `kernel`, its own facility and severity, the sequence
    number and any continuation fields in structured data."""
    params = [("kseq", str(record.seq))]
    params += [(k.lower(), v) for k, v in record.fields.items()]
    return Message(
        facility=record.facility,
        severity=record.severity,
        msg=record.message,
        hostname=hostname,
        app_name="kernel",
        timestamp=booted + record.ts_usec / 1_000_000,
        sd=((SD_ID, params),),
    )
