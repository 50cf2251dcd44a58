"""Senders: a bounded buffer drained by one thread into TCP (RFC 6587) or UDP (RFC 5426).

Sources hand formatted messages to `send()`, which never blocks: the message joins an
in-memory buffer, bounded in messages and bytes. When it is full the oldest message goes,
counted; the next connection first carries a warning saying how many went.

A message leaves the buffer only after the transport took it, so while the target is down
(refused, unreachable, closed by the peer) nothing queued is lost: the thread reconnects with
exponential backoff and sends the buffer in order. What the kernel had accepted just before
the peer died can still be lost; TCP gives no receipt for it (RFC 6587 has no acks).
"""

from __future__ import annotations

import collections
import logging
import select
import socket
import threading
import time
from collections.abc import Callable

from ..backoff import Backoff
from ._rfc5424 import UDP_MAX, octet_frame, truncate

log = logging.getLogger(__name__)

MAX_MESSAGES = 10_000
MAX_BYTES = 8 << 20
BATCH_BYTES = 64 << 10
CONNECT_TIMEOUT = 5.0


class PartialWrite(OSError):
    """A write failed after the first `done` messages had gone out."""

    def __init__(self, done: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.done = done


RECONNECT = Backoff(0.2, 30.0)  # waits between connection attempts: doubling up to 30 s


class Sender:
    """The buffer and the thread; subclasses say how to connect and write a batch."""

    kind = "?"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_messages: int = MAX_MESSAGES,
        max_bytes: int = MAX_BYTES,
        backoff: Backoff | None = None,
        notice: Callable[[str], bytes] | None = None,
    ) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("the buffer needs room for at least one message")
        self.host, self.port = host, port
        self.max_messages, self.max_bytes = max_messages, max_bytes
        self.backoff = backoff or RECONNECT
        self._failures = 0  # failed connections in a row: the backoff's count
        self.notice = notice
        self.sent = 0
        self.dropped_total = 0
        self._dropped = 0  # since the last warning went out
        self._buffer: collections.deque[tuple[int, bytes]] = collections.deque()
        self._bytes = 0
        self._seq = 0
        self._cond = threading.Condition()
        self._closing = False
        self._deadline = float("inf")
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name=f"send-{self.kind}", daemon=True)

    def __str__(self) -> str:
        return f"{self.kind}://{self.host}:{self.port}"

    # --- the sources' side ------------------------------------------------------------

    def start(self) -> Sender:
        self._thread.start()
        return self

    def send(self, message: bytes) -> None:
        """Queue one formatted message (unframed); the oldest go when the buffer is full."""
        with self._cond:
            self._seq += 1
            self._buffer.append((self._seq, message))
            self._bytes += len(message)
            while len(self._buffer) > self.max_messages or (
                self._bytes > self.max_bytes and len(self._buffer) > 1
            ):
                _, old = self._buffer.popleft()
                self._bytes -= len(old)
                if self._dropped == 0:
                    log.warning("%s: buffer full, dropping the oldest messages", self)
                self._dropped += 1
                self.dropped_total += 1
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._buffer)

    def close(self, timeout: float = 1.0) -> int:
        """Send what can be sent within `timeout` seconds, stop; returns what is left."""
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout + 1.0)
        left = self.pending()
        if left:
            log.warning("%s: %d messages not sent at exit", self, left)
        return left

    # --- the thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._done():
                if self._sock is None and not self._reconnect():
                    continue
                batch = self._next_batch()
                if batch:
                    self._deliver(batch)
        finally:
            self._disconnect()

    def _done(self) -> bool:
        with self._cond:
            return self._closing and (not self._buffer or time.monotonic() >= self._deadline)

    def _reconnect(self) -> bool:
        timeout = min(CONNECT_TIMEOUT, max(0.05, self._deadline - time.monotonic()))
        try:
            self._sock = self._connect(timeout)
        except OSError as e:
            wait = self._retry_delay()
            log.warning("%s: cannot connect (%s); retrying in %.1f s", self, e, wait)
            self._sleep(wait)
            return False
        log.info("%s: connected", self)
        self._failures = 0
        with self._cond:
            dropped, self._dropped = self._dropped, 0
        if dropped and self.notice is not None:
            text = f"log forwarder: dropped {dropped} messages while {self} was unreachable"
            try:
                self._write([self.notice(text)])
            except OSError as e:
                with self._cond:
                    self._dropped += dropped
                self._lost(e)
                return False
        return True

    def _sleep(self, seconds: float) -> None:
        """Wait, but wake for close() and never past its deadline."""
        end = time.monotonic() + seconds
        with self._cond:
            while not self._closing and time.monotonic() < end:
                self._cond.wait(end - time.monotonic())

    def _next_batch(self) -> list[tuple[int, bytes]]:
        """The oldest messages, up to BATCH_BYTES, left in the buffer until written."""
        with self._cond:
            if not self._buffer and not self._closing:
                self._cond.wait(0.5)
            batch, size = [], 0
            for seq, message in self._buffer:
                if batch and size + len(message) > BATCH_BYTES:
                    break
                batch.append((seq, message))
                size += len(message)
        return batch

    def _deliver(self, batch: list[tuple[int, bytes]]) -> None:
        error: OSError | None = None
        done = len(batch)
        try:
            if self._peer_closed():
                raise ConnectionResetError("the peer closed the connection")
            self._write([m for _, m in batch])
        except PartialWrite as e:
            error, done = e, e.done
        except OSError as e:
            error, done = e, 0
        if done:
            last = batch[done - 1][0]
            with self._cond:
                # send() may have dropped some of the batch meanwhile: go by sequence number
                while self._buffer and self._buffer[0][0] <= last:
                    _, message = self._buffer.popleft()
                    self._bytes -= len(message)
            self.sent += done
        if error is not None:
            self._lost(error)

    def _lost(self, error: OSError) -> None:
        log.warning("%s: connection lost (%s)", self, error)
        self._disconnect()
        self._sleep(self._retry_delay())

    def _retry_delay(self) -> float:
        self._failures += 1
        return self.backoff.delay(self._failures)

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self, timeout: float) -> socket.socket:
        raise NotImplementedError

    def _write(self, messages: list[bytes]) -> None:
        raise NotImplementedError

    def _peer_closed(self) -> bool:
        return False


def _open(host: str, port: int, kind: socket.SocketKind, timeout: float) -> socket.socket:
    """A socket connected to the first address of `host` that takes it."""
    error: OSError | None = None
    for family, type_, proto, _, address in socket.getaddrinfo(host, port, type=kind):
        sock = socket.socket(family, type_, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error or OSError(f"{host}: no address")


class TcpSender(Sender):
    """RFC 6587 octet-counted frames over one TCP connection."""

    kind = "tcp"

    def _connect(self, timeout: float) -> socket.socket:
        sock = _open(self.host, self.port, socket.SOCK_STREAM, timeout)
        sock.settimeout(30.0)  # a peer that stops reading counts as gone after this
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return sock

    def _write(self, messages: list[bytes]) -> None:
        assert self._sock is not None
        self._sock.sendall(b"".join(octet_frame(m) for m in messages))

    def _peer_closed(self) -> bool:
        """A syslog receiver never writes: readable means it closed (or reset) the link."""
        assert self._sock is not None
        readable, _, _ = select.select([self._sock], [], [], 0)
        if not readable:
            return False
        try:
            return self._sock.recv(4096, socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False


class UdpSender(Sender):
    """One message per datagram, cut to `max_size` octets (RFC 5426)."""

    kind = "udp"

    def __init__(self, host: str, port: int, *, max_size: int = UDP_MAX, **kw: object) -> None:
        super().__init__(host, port, **kw)  # type: ignore[arg-type]
        if max_size < 480:
            raise ValueError(f"UDP message size {max_size} is below RFC 5426's 480")
        self.max_size = max_size

    def _connect(self, timeout: float) -> socket.socket:
        return _open(self.host, self.port, socket.SOCK_DGRAM, timeout)

    def _write(self, messages: list[bytes]) -> None:
        # A refusal (ICMP port unreachable) surfaces on the send after the datagram that
        # met it: that one is lost (UDP has no receipts), the refused one was not sent and
        # stays queued with the rest of the batch until the target answers.
        assert self._sock is not None
        for i, message in enumerate(messages):
            try:
                self._sock.send(truncate(message, self.max_size))
            except OSError as e:
                raise PartialWrite(i, e) from e
