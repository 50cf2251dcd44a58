"""Messages between the daemon, the launcher and its zygotes: one pickled datagram each.

All ends are the same program and the SOCK_SEQPACKET socketpairs are private to them, so
pickle is safe here. Descriptors travel beside a message (SCM_RIGHTS).
"""

from __future__ import annotations

import os
import pickle
import socket
import traceback
from typing import Any

MAX_MESSAGE = 1 << 20
MAX_FDS = 256


def send(sock: socket.socket, message: object, fds: list[int] | None = None) -> None:
    """One pickled message (and descriptors) as one datagram."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"launcher message too large ({len(data)} bytes)")
    socket.send_fds(sock, [data], fds or [])


def receive(sock: socket.socket) -> tuple[Any, list[int]] | None:
    """The next message and its descriptors; None when the other end has gone."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    for fd in fds:  # recvmsg without MSG_CMSG_CLOEXEC: a received fd would survive an exec
        os.set_inheritable(fd, False)
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    return pickle.loads(data), fds


def error_of(e: BaseException) -> tuple[str, int | None, str]:
    """What the client re-raises: the class name, an errno, the message (and where)."""
    err = e.errno if isinstance(e, OSError) else None
    text = str(e) or type(e).__name__
    if not isinstance(e, OSError | ValueError):
        text += "\n" + "".join(traceback.format_exception(e))
    return type(e).__name__, err, text
