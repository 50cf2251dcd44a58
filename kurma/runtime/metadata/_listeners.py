"""The loop's bookkeeping for listening sockets and client connections."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from ._http import RequestParser
from ._netns import NetnsId


@dataclass(eq=False)
class Listener:
    """A listening socket in one network namespace and the pods it answers for.

    Requests arriving here are answered only for these pods, even with another pod's valid
    token: a token is no use outside the namespace it was handed to.
    """

    sock: socket.socket
    netns: NetnsId
    shared: bool  # the daemon's own namespace: every host-network pod, kept open when empty
    netns_path: str | None = None
    pods: set[str] = field(default_factory=set)
    connections: int = 0
    url_base: str = field(init=False)

    def __post_init__(self) -> None:
        host, port = self.sock.getsockname()[:2]
        if ":" in host:
            host = f"[{host}]"
        self.url_base = f"http://{host}:{port}"

    def describe(self) -> str:
        """For log lines: where it listens and in which namespace."""
        where = "host netns" if self.shared else f"netns {self.netns_path}"
        return f"{self.url_base.removeprefix('http://')} ({where})"


@dataclass(eq=False)
class Connection:
    """One client connection: its parser, what is left to send, and its deadline."""

    sock: socket.socket
    listener: Listener
    parser: RequestParser
    deadline: float
    out: bytearray = field(default_factory=bytearray)
    answered: bool = False  # a response is queued; what the client sends now is discarded
    continued: bool = False  # "100 Continue" was sent
    half_closed: bool = False  # the response is sent and our side shut down for writing
