"""Listening sockets created inside a pod's network namespace.

A socket belongs to the network namespace it was created in, for its whole life, whichever
thread or namespace later uses it. setns(CLONE_NEWNET) is allowed in a multi-threaded
process and moves only the calling thread, so a short-lived thread joins the pod's
namespace, makes the listener, and exits: the daemon's other threads (gRPC, the serving
loop) never change namespace and nothing needs to fork. A pod with only `lo` reaches the
listener on 127.0.0.1; since a fresh namespace's `lo` is down, it is brought up if needed.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import os
import socket
import struct
import threading

from ..linux import CLONE_NEWNET, setns

log = logging.getLogger(__name__)

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sh22x")  # struct ifreq: name, then ifr_flags in the 24-byte union

NetnsId = tuple[int, int]


def netns_id(netns_path: str | os.PathLike[str] | None) -> NetnsId:
    """The (device, inode) naming a network namespace; None means the caller's own."""
    st = os.stat("/proc/self/ns/net" if netns_path is None else netns_path)
    return st.st_dev, st.st_ino


def ensure_loopback_up() -> bool:
    """Bring `lo` of the calling thread's namespace up; True if it was down."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = _IFREQ.pack(b"lo", 0)
        flags = _IFREQ.unpack(fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        if flags & _IFF_UP:
            return False
        fcntl.ioctl(s, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))
        return True


def bind_listener(address: str, port: int, backlog: int = 128) -> socket.socket:
    """A non-blocking TCP listener on address:port of the calling thread's namespace."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        # A restarted daemon rebinds the port while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def listen_in_netns(
    netns_path: str | os.PathLike[str], address: str, port: int, backlog: int = 128
) -> socket.socket:
    """A listener on address:port created inside the network namespace at `netns_path`.

    Raises OSError (from setns, bind or listen) in the caller's thread.
    """
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            setns(netns_path, CLONE_NEWNET)
            if ipaddress.ip_address(address).is_loopback and ensure_loopback_up():
                log.info("brought up lo in network namespace %s", os.fspath(netns_path))
            result.append(bind_listener(address, port, backlog))
        except BaseException as e:  # handed to the caller's thread below
            result.append(e)

    thread = threading.Thread(target=work, name="kurma-metadata-netns", daemon=True)
    thread.start()
    thread.join()
    if not result:
        raise OSError(errno.EIO, "metadata listener thread ended without a result", netns_path)
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
