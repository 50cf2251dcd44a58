"""RFC 5424 syslog messages: formatting, escaping, and the transports' framing.

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [SP MSG]

Header fields are printable US-ASCII without spaces, cut to the RFC's maximum lengths; an
absent one is the NILVALUE `-`. MSG is UTF-8 without a BOM (RFC 5424 6.4 allows MSG-ANY;
receivers such as rsyslog and syslog-ng read it either way).

Kurma's structured data uses the SD-ID `kurma@32473`. 32473 is the private enterprise
number IANA reserves for documentation (RFC 5612): a placeholder until Kurma has a number of
its own; receivers only need it to be stable.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

PEN = 32473
SD_ID = f"kurma@{PEN}"
NILVALUE = "-"

# RFC 5424 6: the header fields' maximum lengths
HOSTNAME_MAX = 255
APP_NAME_MAX = 48
PROCID_MAX = 128
MSGID_MAX = 32
SD_NAME_MAX = 32

UDP_MAX = 2048  # RFC 5426 3.2: every receiver SHOULD take 2048 octets


class Facility(IntEnum):
    KERN = 0
    USER = 1
    DAEMON = 3
    SYSLOG = 5


class Severity(IntEnum):
    EMERG = 0
    ALERT = 1
    CRIT = 2
    ERR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7


SDElement = tuple[str, Sequence[tuple[str, str]]]  # (SD-ID, [(PARAM-NAME, value), ...])


@dataclass(frozen=True)
class Message:
    """One syslog message before formatting; empty header fields become NILVALUE."""

    facility: int
    severity: int
    msg: str
    hostname: str = ""
    app_name: str = ""
    procid: str = ""
    msgid: str = ""
    timestamp: float | None = None  # seconds since the epoch; None: NILVALUE
    sd: Sequence[SDElement] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not 0 <= self.facility <= 23:
            raise ValueError(f"facility {self.facility} is not 0-23")
        if not 0 <= self.severity <= 7:
            raise ValueError(f"severity {self.severity} is not 0-7")


def format_timestamp(t: float) -> str:
    """RFC 3339 in UTC with microseconds: `2026-11-22T13:55:00.123456Z`."""
    seconds = int(t)
    micros = round((t - seconds) * 1_000_000)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


def header_field(value: str, limit: int) -> str:
    """`value` as a header field: printable ASCII (others become `_`), at most `limit`."""
    if not value:
        return NILVALUE
    return "".join(c if "!" <= c <= "~" else "_" for c in value[:limit])


def sd_name(value: str) -> str:
    """An SD-NAME: printable ASCII except `=`, space, `]` and `"`, at most 32 characters."""
    cleaned = "".join(c if "!" <= c <= "~" and c not in '= ]"' else "_" for c in value)
    if not cleaned:
        raise ValueError("an SD-NAME may not be empty")
    return cleaned[:SD_NAME_MAX]


def escape_param(value: str) -> str:
    """A PARAM-VALUE: `"`, `\\` and `]` escaped with a backslash (RFC 5424 6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def format_sd(elements: Iterable[SDElement]) -> str:
    """STRUCTURED-DATA: `[ID name="value" ...]...`, or NILVALUE when there is none."""
    parts = []
    for sd_id, params in elements:
        text = "".join(f' {sd_name(k)}="{escape_param(v)}"' for k, v in params)
        parts.append(f"[{sd_name(sd_id)}{text}]")
    return "".join(parts) or NILVALUE


def format_message(m: Message) -> bytes:
    """The message as RFC 5424 octets (no framing)."""
    stamp = NILVALUE if m.timestamp is None else format_timestamp(m.timestamp)
    header = " ".join(
        (
            f"<{m.facility * 8 + m.severity}>1",
            stamp,
            header_field(m.hostname, HOSTNAME_MAX),
            header_field(m.app_name, APP_NAME_MAX),
            header_field(m.procid, PROCID_MAX),
            header_field(m.msgid, MSGID_MAX),
            format_sd(m.sd),
        )
    )
    if not m.msg:
        return header.encode("ascii")
    return header.encode("ascii") + b" " + m.msg.encode("utf-8", "replace")


def octet_frame(data: bytes) -> bytes:
    """RFC 6587 3.4.1 octet counting for TCP: `LEN SP MSG`."""
    return b"%d %s" % (len(data), data)


def truncate(data: bytes, limit: int) -> bytes:
    """At most `limit` octets, cut on a UTF-8 character boundary (for one UDP datagram)."""
    if len(data) <= limit:
        return data
    cut = limit
    # step back over continuation bytes (10xxxxxx) to the start of the cut character
    while cut > 0 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return data[:cut]


def pod_log_message(
    line: str,
    *,
    hostname: str,
    pod_name: str,
    pod_uuid: str,
    app: str,
    stream: str = "",
    timestamp: float | None = None,
) -> Message:
    """A line of a pod's app output: APP-NAME the pod's name, the pod and app in SD.

    `stream` is "stdout" or "stderr" when known: stderr is `notice`, everything else `info`
    (kurmad keeps an app's two streams in one log, so the forwarder usually does not know).
    """
    params: list[tuple[str, str]] = [("pod", pod_uuid), ("app", app)]
    if stream:
        params.append(("stream", stream))
    severity = Severity.NOTICE if stream == "stderr" else Severity.INFO
    return Message(
        facility=Facility.USER,
        severity=severity,
        msg=line,
        hostname=hostname,
        app_name=pod_name or pod_uuid,
        timestamp=time.time() if timestamp is None else timestamp,
        sd=((SD_ID, params),),
    )


def notice_message(text: str, *, hostname: str, timestamp: float | None = None) -> Message:
    """The forwarder's own word to the target (e.g. how many messages it dropped)."""
    return Message(
        facility=Facility.SYSLOG,
        severity=Severity.WARNING,
        msg=text,
        hostname=hostname,
        app_name="kurma-logfwd",
        timestamp=time.time() if timestamp is None else timestamp,
    )
