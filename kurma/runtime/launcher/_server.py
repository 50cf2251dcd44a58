"""The launcher: a forked process without threads that forks the pods' processes on request.

kurmad (or a `Runtime` in a test) forks it before starting any thread, so every fork the
launcher makes is safe. It talks over a SOCK_SEQPACKET socketpair (see _wire): one request
per message, one answer back. It keeps warm pod shells (see _zygote) and offers each to the
daemon over a second socketpair as soon as it is made, so the daemon starts a pod in one
itself (see _shell) without a round trip through the launcher; a start the daemon cannot
make so (another shape, a child pod's cgroup, no shell offered yet) comes here. It reaps
its own children (zygotes, and the pods' podinits, whose ends the daemon learns through
pidfds: the launcher is a child subreaper), and exits when its socket closes.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import selectors
import signal
import socket
import time
import traceback
from typing import NoReturn

from .._plan import default_seccomp
from ..cgroups import CgroupSystem
from ..linux import last_cap, set_child_subreaper
from ._app import seccomp_filter
from ._exec import ExecStart, spawn_exec
from ._shell import start_in_shell
from ._spawn import HandlerStart, PodStart, PodStarted, spawn_handler
from ._wire import error_of, receive, send
from ._zygote import ZygotePool

log = logging.getLogger(__name__)

REPLENISH_AFTER_IDLE = 0.05  # seconds without a request before warm zygotes are made


class _Server:
    def __init__(self, sock: socket.socket, shells: socket.socket, pool: ZygotePool) -> None:
        self.sock = sock
        self.shells = shells  # offers to the daemon go out here, its "took" notes come in
        self.pool = pool

    def handle(self, request: object, fds: list[int]) -> tuple[object, list[int]]:
        if isinstance(request, ExecStart):
            pid, errpipe, terminal = spawn_exec(request, fds)
            return pid, [errpipe] if terminal is None else [errpipe, terminal]
        if isinstance(request, PodStart):
            return self.start_pod(request)
        if isinstance(request, HandlerStart):
            pid, errpipe = spawn_handler(request)
            return pid, [errpipe]
        if request == "ping":
            return "pong", []
        raise ValueError(f"unknown launcher request {type(request).__name__}")

    def start_pod(self, request: PodStart) -> tuple[PodStarted, list[int]]:
        """A start the daemon could not make from an offered shell (another shape, a
        child pod's cgroup, or none offered yet): in a shell taken here or made now."""
        plan = request.plan
        shell = self.pool.take(
            plan.host_namespaces, request.metadata_listen, request.cgroup_parent, request.cgroup
        )
        return start_in_shell(shell, request, self.pool.cgroups)

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.pool.replenish()
        idle_at: float | None = None  # when to replenish the pool, once requests pause
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            sel.register(self.shells, selectors.EVENT_READ)
            sel.register(wake_r, selectors.EVENT_READ)
            while True:
                timeout = None if idle_at is None else max(0.0, idle_at - time.monotonic())
                events = sel.select(timeout)
                if not events and idle_at is not None:
                    # A zygote moving into its cgroup holds the kernel's cgroup threadgroup
                    # lock for an RCU grace period, stalling every fork on the machine:
                    # never while a pod is starting.
                    self.pool.replenish()
                    idle_at = None
                for key, _ in events:
                    if key.fileobj is self.sock:
                        if not self._one_request():
                            return
                        idle_at = time.monotonic() + REPLENISH_AFTER_IDLE
                    elif key.fileobj is self.shells:
                        if not self._one_note():
                            sel.unregister(self.shells)
                        idle_at = time.monotonic() + REPLENISH_AFTER_IDLE
                    else:
                        with contextlib.suppress(BlockingIOError):
                            while os.read(wake_r, 512):
                                pass
                        _reap()

    def _one_note(self) -> bool:
        """The daemon took an offered shell (`("took", relpath)`); False at EOF."""
        got = receive(self.shells)
        if got is None:
            return False
        (kind, relpath), fds = got
        for fd in fds:
            os.close(fd)
        if kind == "took":
            self.pool.taken(relpath)
        return True

    def drain_notes(self) -> None:
        """Take the notes still queued (before the pool's clean-up at exit)."""
        self.shells.setblocking(False)
        with contextlib.suppress(OSError):
            while self._one_note():
                pass

    def _one_request(self) -> bool:
        got = receive(self.sock)
        if got is None:
            return False
        request, fds = got
        out_fds: list[int] = []
        try:
            answer, out_fds = self.handle(request, fds)
            reply: tuple[str, object] = ("ok", answer)
        except Exception as e:
            log.debug("launcher request failed", exc_info=True)
            reply = ("error", error_of(e))
        finally:
            for fd in fds:  # the children that needed them have their own copies
                os.close(fd)
        try:
            send(self.sock, reply, out_fds)
        finally:
            for fd in out_fds:
                os.close(fd)
        return True


def _reap() -> None:
    """Collect every ended child: the launcher's statuses matter to nobody (pidfds tell)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def launcher_main(
    sock: socket.socket,
    shells: socket.socket,
    cgroups: CgroupSystem,
    parent: str,
    warm: int,
    metadata_listen: tuple[str, int] | None = None,
) -> NoReturn:
    """Body of the forked launcher process."""
    code = 0
    pool = ZygotePool(cgroups, parent, warm, metadata_listen, offer_to=shells)
    server = _Server(sock, shells, pool)
    try:
        os.setsid()
        set_child_subreaper(True)  # pods' PID 1s outlive their zygotes: we reap them
        # Every fork copies the pages it writes to; a garbage collection in a child would
        # write to every object. The launcher makes little garbage, so no collector at all.
        gc.disable()
        seccomp_filter(default_seccomp())  # built once, inherited by every zygote
        last_cap()  # likewise: children never read /proc for it
        gc.freeze()
        server.serve()
    except BaseException:
        traceback.print_exc()
        code = 70
    finally:
        server.drain_notes()
        pool.close()
        os._exit(code)
