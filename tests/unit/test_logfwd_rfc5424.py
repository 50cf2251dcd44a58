"""RFC 5424 messages as the log forwarder writes them: header, escaping, framing, cutting."""

from __future__ import annotations

import re

import pytest

import kurma.logfwd
from kurma.logfwd._rfc5424 import (
    SD_ID,
    Message,
    escape_param,
    format_message,
    format_timestamp,
    notice_message,
    octet_frame,
    pod_log_message,
    truncate,
)

# RFC 5424 6 as a regular expression, enough to say a line is well formed
SYSLOG = re.compile(
    rb"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    rb"(?P<msgid>\S+) (?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?$",
    re.S,
)

T = 1_795_000_000.25  # 2026-11-18T...


def test_public_names() -> None:
    """What the service spec and other layers may use from kurma.logfwd."""
    public = {n for n in vars(kurma.logfwd) if not n.startswith("_")}
    assert public >= {
        "main",
        "parse_target",
        "format_message",
        "pod_log_message",
        "kernel_message",
        "parse_record",
        "octet_frame",
        "TcpSender",
        "UdpSender",
        "KmsgSource",
        "PodLogSource",
    }


def test_pod_line_is_rfc5424_with_pod_and_app() -> None:
    """A pod's line: PRI user.info (14), version 1, APP-NAME the pod, SD pod and app."""
    m = pod_log_message(
        "hello world", hostname="node1", pod_name="web", pod_uuid="1234-abcd", app="nginx",
        timestamp=T,
    )  # fmt: skip
    data = format_message(m)
    match = SYSLOG.match(data)
    assert match, data
    assert match["pri"] == b"14"
    assert match["ts"] == format_timestamp(T).encode()
    assert (match["host"], match["app"], match["procid"], match["msgid"]) == (
        b"node1",
        b"web",
        b"-",
        b"-",
    )
    assert match["sd"] == f'[{SD_ID} pod="1234-abcd" app="nginx"]'.encode()
    assert match["msg"] == b"hello world"


def test_stderr_is_notice_and_named() -> None:
    m = pod_log_message("oops", hostname="h", pod_name="p", pod_uuid="u", app="a", stream="stderr")
    data = format_message(m)
    assert data.startswith(b"<13>1 ")
    assert b'stream="stderr"]' in data


def test_timestamp_is_rfc3339_utc_with_microseconds() -> None:
    assert format_timestamp(0) == "1970-01-01T00:00:00.000000Z"
    assert format_timestamp(1_000_000_000.5) == "2001-09-09T01:46:40.500000Z"
    assert format_timestamp(59.9999999) == "1970-01-01T00:01:00.000000Z"  # rounds up


def test_sd_param_values_are_escaped() -> None:
    """`"`, `\\` and `]` get a backslash inside a PARAM-VALUE; nothing else changes."""
    assert escape_param('a"b\\c]d=e f') == 'a\\"b\\\\c\\]d=e f'
    m = Message(1, 6, "x", sd=((SD_ID, [("app", 'we"ird]\\')]),))
    data = format_message(m)
    assert b'[kurma@32473 app="we\\"ird\\]\\\\"] x' in data
    assert SYSLOG.match(data)


def test_absent_fields_are_nilvalue() -> None:
    """No timestamp, host, app, procid, msgid, SD or MSG: each a `-`, no trailing space."""
    assert format_message(Message(0, 0, "")) == b"<0>1 - - - - - -"
    assert format_message(Message(23, 7, "m")) == b"<191>1 - - - - - - m"


def test_header_fields_printable_and_cut() -> None:
    """Spaces and non-ASCII in header fields become `_`; APP-NAME stops at 48."""
    m = Message(1, 6, "x", hostname="my host", app_name="ä" + "a" * 60)
    match = SYSLOG.match(format_message(m))
    assert match and match["host"] == b"my_host"
    assert match["app"] == b"_" + b"a" * 47


def test_message_keeps_utf8() -> None:
    data = format_message(Message(1, 6, "grüße ✓"))
    assert data.endswith(" grüße ✓".encode())


def test_bad_priority_is_refused() -> None:
    with pytest.raises(ValueError, match="facility 24"):
        Message(24, 0, "x")
    with pytest.raises(ValueError, match="severity 8"):
        Message(0, 8, "x")


def test_octet_counting_frame() -> None:
    """RFC 6587: the length in octets (not characters), a space, the message."""
    assert octet_frame(b"<14>1 - - - - - - hi") == b"20 <14>1 - - - - - - hi"
    msg = "✓".encode()
    assert octet_frame(msg) == b"3 " + msg


def test_truncate_on_a_character_boundary() -> None:
    """Cutting for a datagram never leaves half a UTF-8 character."""
    assert truncate(b"abcdef", 10) == b"abcdef"
    assert truncate(b"abcdef", 4) == b"abcd"
    data = "ab✓".encode()  # 2 + 3 bytes
    assert truncate(data, 4) == b"ab"
    assert truncate(data, 5) == data
    assert truncate(data, 4).decode() == "ab"


def test_notice_is_from_the_forwarder() -> None:
    data = format_message(notice_message("dropped 3 messages", hostname="h", timestamp=T))
    match = SYSLOG.match(data)
    assert match and match["pri"] == b"44"  # syslog.warning
    assert match["app"] == b"kurma-logfwd"
    assert match["msg"] == b"dropped 3 messages"
