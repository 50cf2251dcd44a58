"""`python3 -m kurma.logfwd`: the syslog service's program.

Threads: the kernel log reader, the pod log source (plus one reader per followed pod), and
the sender; the main thread only waits for SIGTERM/SIGINT, then gives the sender about a
second to flush. Exit status 2 for bad settings, 0 after a signal.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ..client import Client
from ._kmsg import KmsgRecord, boot_time, kernel_message
from ._podlogs import PodLine, PodLogSource
from ._rfc5424 import format_message, notice_message, pod_log_message
from ._sender import Backoff, Sender, TcpSender, UdpSender
from ._sources import KMSG, KmsgSource

log = logging.getLogger("kurma.logfwd")

DEFAULT_PORT = 514
FLUSH_SECONDS = 1.0


@dataclass(frozen=True)
class Target:
    host: str
    port: int


def parse_target(text: str) -> Target:
    """`host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address; port default 514."""
    text = text.strip()
    if not text:
        raise ValueError("the syslog target is empty: give HOST[:PORT]")
    port_text = ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"syslog target {text!r}: give [IPV6]:PORT")
        port_text = rest[1:]
        if rest and not port_text:
            raise ValueError(f"syslog target {text!r}: the port after ':' is missing")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text:
            raise ValueError(f"syslog target {text!r}: the port after ':' is missing")
    else:
        host = text  # a name, IPv4, or an IPv6 address without a port
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise ValueError(f"syslog target {text!r}: {host!r} is not a host name or address")
    if not port_text:
        return Target(host, DEFAULT_PORT)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"syslog target {text!r}: port {port_text!r} is not 1-65535")
    return Target(host, int(port_text))


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python3 -m kurma.logfwd",
        description="Forward the kernel log and every pod's logs as RFC 5424 syslog.",
    )
    p.add_argument(
        "--target",
        default=env("SYSLOG_TARGET", ""),
        help="HOST[:PORT] of the syslog receiver, port 514 by default ($SYSLOG_TARGET)",
    )
    p.add_argument(
        "--protocol",
        default=env("SYSLOG_PROTOCOL", "tcp"),
        help="tcp (RFC 6587 octet counting) or udp (RFC 5426) ($SYSLOG_PROTOCOL)",
    )
    p.add_argument(
        "--hostname",
        default=env("SYSLOG_HOSTNAME", ""),
        help="HOSTNAME field ($SYSLOG_HOSTNAME; default: this machine's name)",
    )
    p.add_argument(
        "--kurma-host",
        default="",
        help="kurmad's API: unix:///PATH or /PATH (default: $KURMA_HOST, "
        "else the pod's or the system socket)",
    )
    p.add_argument("--no-kernel", action="store_true", help="do not forward the kernel log")
    p.add_argument("--no-pods", action="store_true", help="do not forward pod logs")
    p.add_argument("--kmsg", default=KMSG, help=argparse.SUPPRESS)
    p.add_argument(
        "--exclude-pod",
        action="append",
        default=[],
        metavar="UUID|NAME",
        help="a pod not to forward (repeatable); our own pod never is",
    )
    p.add_argument(
        "--buffer-messages",
        type=int,
        default=10_000,
        help="messages kept while the target is down (the oldest go first)",
    )
    p.add_argument(
        "--buffer-bytes", type=int, default=8 << 20, help="bytes kept while the target is down"
    )
    p.add_argument(
        "--backoff-max",
        type=float,
        default=30.0,
        help="longest wait in seconds between reconnection attempts",
    )
    p.add_argument(
        "--udp-max-size",
        type=int,
        default=2048,
        help="longest UDP datagram; longer messages are cut",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def make_sender(args: argparse.Namespace, target: Target, hostname: str) -> Sender:
    def notice(text: str) -> bytes:
        return format_message(notice_message(text, hostname=hostname))

    common = {
        "max_messages": args.buffer_messages,
        "max_bytes": args.buffer_bytes,
        "backoff": Backoff(min(0.2, args.backoff_max), args.backoff_max),
        "notice": notice,
    }
    if args.protocol == "udp":
        return UdpSender(target.host, target.port, max_size=args.udp_max_size, **common)
    return TcpSender(target.host, target.port, **common)  # type: ignore[arg-type]


def settings(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Target, str]:
    """Parsed flags, the target and the hostname; exits 2 naming what is wrong."""
    p = parser()
    args = p.parse_args(argv)
    if not args.target:
        p.error("no syslog target: give --target HOST[:PORT] or set SYSLOG_TARGET")
    try:
        target = parse_target(args.target)
    except ValueError as e:
        p.error(str(e))
    args.protocol = args.protocol.strip().lower()
    if args.protocol not in ("tcp", "udp"):
        p.error(f"protocol {args.protocol!r}: give tcp or udp (--protocol, SYSLOG_PROTOCOL)")
    if args.buffer_messages < 1 or args.buffer_bytes < 1:
        p.error("--buffer-messages and --buffer-bytes must be at least 1")
    if args.backoff_max <= 0:
        p.error("--backoff-max must be more than 0")
    if args.udp_max_size < 480:
        p.error(f"--udp-max-size {args.udp_max_size} is below RFC 5426's 480")
    return args, target, args.hostname or socket.gethostname()


def main(argv: Sequence[str] | None = None) -> int:
    args, target, hostname = settings(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s logfwd %(levelname)s %(message)s",
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    sender = make_sender(args, target, hostname).start()
    log.info("forwarding to %s as %s", sender, hostname)
    pods = None
    if not args.no_kernel:
        booted = boot_time()

        def forward_kernel(record: KmsgRecord) -> None:
            sender.send(format_message(kernel_message(record, hostname=hostname, booted=booted)))

        KmsgSource(forward_kernel, stop, args.kmsg).start()
    if not args.no_pods:

        def forward_pod(line: PodLine) -> None:
            message = pod_log_message(
                line.text,
                hostname=hostname,
                pod_name=line.pod_name,
                pod_uuid=line.pod_uuid,
                app=line.app,
            )
            sender.send(format_message(message))

        def connect() -> Client:
            return Client.connect(args.kurma_host or None, timeout=5.0)

        pods = PodLogSource(connect, forward_pod, stop, exclude=args.exclude_pod).start()

    while not stop.wait(0.5):
        pass
    log.info("stopping: flushing %d buffered messages", sender.pending())
    if pods is not None:
        pods.close()
    sender.close(FLUSH_SECONDS)
    return 0
