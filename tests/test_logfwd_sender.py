"""The senders against real receivers on 127.0.0.1: framing, buffering, reconnecting, drops.

A receiver is a socketserver thread that parses RFC 6587 octet-counted frames (TCP) or takes
one message per datagram (UDP). Every server and sender is closed when a test ends.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kurma.logfwd._sender import Backoff, TcpSender, UdpSender

from .waiting import wait_for

pytestmark = pytest.mark.timeout(60)


def read_frames(rfile: Any) -> Iterator[bytes]:
    """RFC 6587 3.4.1: MSG-LEN SP SYSLOG-MSG, until the peer closes."""
    while True:
        digits = b""
        while (c := rfile.read(1)) != b" ":
            if not c:
                return
            assert c.isdigit(), f"not an octet count: {digits + c!r}"
            digits += c
        data = rfile.read(int(digits))
        assert len(data) == int(digits), "frame cut short"
        yield data


class Receiver:
    """A syslog receiver on 127.0.0.1:`port` (0: any), TCP or UDP; `messages` in order."""

    def __init__(self, kind: str, port: int = 0) -> None:
        self.messages: list[bytes] = []
        self.connections: list[socket.socket] = []
        receiver = self

        class TcpHandler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                receiver.connections.append(self.connection)
                for message in read_frames(self.rfile):
                    receiver.messages.append(message)

        class UdpHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                receiver.messages.append(self.request[0])

        if kind == "tcp":
            server_cls: type[socketserver.BaseServer] = socketserver.ThreadingTCPServer
            handler: Any = TcpHandler
        else:
            server_cls, handler = socketserver.UDPServer, UdpHandler
        server_cls.allow_reuse_address = True
        server_cls.daemon_threads = True  # type: ignore[attr-defined]
        self.server = server_cls(("127.0.0.1", port), handler)
        self.port = self.server.server_address[1]  # type: ignore[index]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()

    def close(self) -> None:
        """Stop listening and end every connection, as a receiver that exits does."""
        self.server.shutdown()
        self.server.server_close()
        for connection in self.connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(kind: str = "tcp", port: int = 0) -> Receiver:
        made.append(Receiver(kind, port))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def senders() -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def make(cls: type, port: int, **kw: Any) -> Any:
        kw.setdefault("backoff", Backoff(0.05, 0.2))
        made.append(cls("127.0.0.1", port, **kw).start())
        return made[-1]

    yield make
    for s in made:
        s.close(0.1)


def notice(text: str) -> bytes:
    return f"<44>1 - - kurma-logfwd - - - {text}".encode()


def test_tcp_messages_arrive_octet_counted_in_order(receivers, senders) -> None:
    """Messages, including ones with newlines and multi-byte text, arrive whole, in order."""
    receiver = receivers("tcp")
    sender = senders(TcpSender, receiver.port)
    sent = [f"<14>1 - h app - - - line {i} ✓".encode() for i in range(500)]
    sent.append(b"<14>1 - h app - - - two\nlines")
    for message in sent:
        sender.send(message)
    wait_for(lambda: len(receiver.messages) == len(sent), "501 messages")
    assert receiver.messages == sent
    assert sender.sent == len(sent) and sender.pending() == 0


def test_tcp_target_down_first_then_buffered_messages_arrive(receivers, senders) -> None:
    """Nothing listens yet: messages wait; once a receiver starts they arrive in order."""
    port = free_port()
    sender = senders(TcpSender, port)
    sent = [b"<14>1 - h app - - - early %d" % i for i in range(100)]
    for message in sent:
        sender.send(message)
    time.sleep(0.5)  # a few refused attempts
    assert sender.pending() == 100
    receiver = receivers("tcp", port)
    wait_for(lambda: len(receiver.messages) == 100, "the buffered messages")
    assert receiver.messages == sent
    assert sender.dropped_total == 0


def test_tcp_receiver_restart_loses_nothing_queued(receivers, senders) -> None:
    """The receiver goes away and comes back: messages sent meanwhile arrive after it."""
    receiver = receivers("tcp")
    port = receiver.port
    sender = senders(TcpSender, port)
    sender.send(b"before")
    wait_for(lambda: receiver.messages == [b"before"], "the first message")
    receiver.close()
    time.sleep(0.2)  # its FIN reaches the sender's socket
    for i in range(20):
        sender.send(b"during %d" % i)
    time.sleep(0.3)
    again = receivers("tcp", port)
    wait_for(lambda: len(again.messages) == 20, "the messages sent while it was down")
    assert again.messages == [b"during %d" % i for i in range(20)]


def test_buffer_overflow_drops_oldest_and_reports_the_count(receivers, senders) -> None:
    """10 room, 25 sent while down: the newest 10 arrive, after a warning naming 15."""
    port = free_port()
    sender = senders(TcpSender, port, max_messages=10, notice=notice)
    for i in range(25):
        sender.send(b"m%d" % i)
    assert sender.pending() == 10 and sender.dropped_total == 15
    receiver = receivers("tcp", port)
    wait_for(lambda: len(receiver.messages) == 11, "warning plus 10 messages")
    warning, *rest = receiver.messages
    assert b"dropped 15 messages" in warning and b"kurma-logfwd" in warning
    assert rest == [b"m%d" % i for i in range(15, 25)]


def test_buffer_bytes_bound(senders) -> None:
    """The byte bound holds too: 1 KiB of room keeps the newest messages that fit."""
    sender = senders(TcpSender, free_port(), max_bytes=1024)
    for _ in range(10):
        sender.send(b"x" * 300)
    assert sender.pending() == 3 and sender.dropped_total == 7


def test_close_flushes_within_its_timeout(receivers) -> None:
    """close() sends what is queued when it can, and gives up after the timeout when not."""
    receiver = receivers("tcp")
    sender = TcpSender("127.0.0.1", receiver.port, backoff=Backoff(0.05, 0.2))
    for i in range(50):
        sender.send(b"m%d" % i)
    sender.start()
    assert sender.close(1.0) == 0
    wait_for(lambda: len(receiver.messages) == 50, "the flushed messages")

    down = TcpSender("127.0.0.1", free_port(), backoff=Backoff(0.05, 0.2)).start()
    down.send(b"never")
    started = time.monotonic()
    assert down.close(0.5) == 1
    assert time.monotonic() - started < 2.5


def test_udp_one_message_per_datagram_cut_to_size(receivers, senders) -> None:
    """UDP: each message its own datagram, no framing, longer ones cut to max_size."""
    receiver = receivers("udp")
    sender = senders(UdpSender, receiver.port, max_size=480)
    long = b"<14>1 - h app - - - " + "é".encode() * 400
    sender.send(b"<14>1 - h app - - - one")
    sender.send(long)
    wait_for(lambda: len(receiver.messages) == 2, "two datagrams")
    assert receiver.messages[0] == b"<14>1 - h app - - - one"
    assert len(receiver.messages[1]) <= 480 and long.startswith(receiver.messages[1])
    receiver.messages[1].decode()  # cut between characters, never inside one


def test_udp_target_down_then_up(receivers, senders) -> None:
    """Nothing on the port: the sender keeps going (UDP may lose what went meanwhile), and
    once a receiver listens, every later message arrives, in order."""
    port = free_port(socket.SOCK_DGRAM)
    sender = senders(UdpSender, port)
    for i in range(5):
        sender.send(b"lost? %d" % i)
        time.sleep(0.05)
    receiver = receivers("udp", port)
    wait_for(lambda: sender.pending() == 0, "the queue to drain")
    for i in range(5):
        sender.send(b"u%d" % i)
    wait_for(lambda: b"u4" in receiver.messages, "the last datagram")
    assert [m for m in receiver.messages if m.startswith(b"u")] == [b"u%d" % i for i in range(5)]


def test_backoff_doubles_to_its_maximum() -> None:
    """The tree's one Backoff: the n-th failure in a row waits initial * 2**(n-1), capped."""
    b = Backoff(0.2, 1.0)
    assert [b.delay(n) for n in range(6)] == [0.0, 0.2, 0.4, 0.8, 1.0, 1.0]
