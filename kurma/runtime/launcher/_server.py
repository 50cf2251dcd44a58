"""The launcher: a forked process without threads that forks the pods' processes on request.

kurmad (or a `Runtime` in a test) forks it before starting any thread, so every fork the
launcher makes is safe. It talks over a SOCK_SEQPACKET socketpair: one pickled request per
message, one pickled answer back, descriptors beside it (SCM_RIGHTS). Both ends are the same
program and the socket is private to them, so pickle is safe here. The launcher reaps its
own children (the pods' podinits, whose ends the daemon learns through pidfds) and exits
when its socket closes.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import selectors
import signal
import socket
import traceback
from typing import Any, NoReturn

from ._spawn import HandlerStart, PodStart, open_own_namespaces, spawn_handler, spawn_pod

log = logging.getLogger(__name__)

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
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    return pickle.loads(data), fds


class _Server:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.own_namespaces = open_own_namespaces()

    def handle(self, request: object) -> tuple[object, list[int]]:
        if isinstance(request, PodStart):
            return spawn_pod(request, self.own_namespaces)
        if isinstance(request, HandlerStart):
            pid, errpipe = spawn_handler(request)
            return pid, [errpipe]
        if request == "ping":
            return "pong", []
        raise ValueError(f"unknown launcher request {type(request).__name__}")

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            sel.register(wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self.sock:
                        if not self._one_request():
                            return
                    else:
                        while True:
                            try:
                                if not os.read(wake_r, 512):
                                    break
                            except BlockingIOError:
                                break
                        _reap()

    def _one_request(self) -> bool:
        got = receive(self.sock)
        if got is None:
            return False
        request, fds = got
        for fd in fds:
            os.close(fd)
        out_fds: list[int] = []
        try:
            answer, out_fds = self.handle(request)
            reply: tuple[str, object] = ("ok", answer)
        except Exception as e:
            log.debug("launcher request failed", exc_info=True)
            reply = ("error", _error_of(e))
        try:
            send(self.sock, reply, out_fds)
        finally:
            for fd in out_fds:
                os.close(fd)
        return True


def _error_of(e: Exception) -> tuple[str, int | None, str]:
    """What the client re-raises: the class name, an errno, the message (and where)."""
    err = e.errno if isinstance(e, OSError) else None
    text = str(e) or type(e).__name__
    if not isinstance(e, OSError | ValueError):
        text += "\n" + "".join(traceback.format_exception(e))
    return type(e).__name__, err, text


def _reap() -> None:
    """Collect every ended child: the launcher's statuses matter to nobody (pidfds tell)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def launcher_main(sock: socket.socket) -> NoReturn:
    """Body of the forked launcher process."""
    code = 0
    try:
        os.setsid()
        # Every fork copies the pages it writes to; a garbage collection in a child would
        # write to every object. The launcher makes little garbage, so no collector at all.
        gc.disable()
        gc.freeze()
        _Server(sock).serve()
    except BaseException:
        traceback.print_exc()
        code = 70
    finally:
        os._exit(code)
