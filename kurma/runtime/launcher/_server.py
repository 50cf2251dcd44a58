"""The launcher: a forked process without threads that forks the pods' processes on request.

kurmad (or a `Runtime` in a test) forks it before starting any thread, so every fork the
launcher makes is safe. It talks over a SOCK_SEQPACKET socketpair (see _wire): one request
per message, one answer back. It creates and limits each pod's cgroup, hands the pod start
to a warm zygote (see _zygote), reaps its own children (zygotes, and the pods' podinits,
whose ends the daemon learns through pidfds: the launcher is a child subreaper), and exits
when its socket closes.
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

from .._plan import PodPlan, default_seccomp
from ..cgroups import CgroupSystem
from ..linux import last_cap, set_child_subreaper
from ._app import seccomp_filter
from ._exec import ExecStart, spawn_exec
from ._spawn import HandlerStart, PodStart, PodStarted, first_app_message, spawn_handler
from ._wire import error_of, receive, send
from ._zygote import ZygotePool, procs_files

log = logging.getLogger(__name__)

REPLENISH_AFTER_IDLE = 0.05  # seconds without a request before warm zygotes are made


class _Server:
    def __init__(self, sock: socket.socket, pool: ZygotePool) -> None:
        self.sock = sock
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
        """Hand the start to a shell without waiting for it: the PodStart to P1 (with the
        errpipes of the apps it forks), the first app's plan to that app's waiting process,
        so both work at once; the daemon gets the shell's descriptors and learns of any
        failure on the errpipes."""
        plan = request.plan
        zygote = self.pool.take(
            plan.host_namespaces, request.metadata_listen, request.cgroup_parent
        )
        errpipes = [os.pipe() for _ in plan.apps[1:]]
        try:
            app_procs = self._limit(zygote.cgroup.relpath, plan)
            send(zygote.sock, (request, app_procs), [w for _, w in errpipes])
            if plan.apps:
                send(zygote.app_sock, first_app_message(plan, app_procs))
            pidfd = os.pidfd_open(zygote.pid)  # our child: it cannot have been reaped yet
        except BaseException:
            for r, _ in errpipes:
                os.close(r)
            with contextlib.suppress(OSError):
                zygote.cgroup.kill_all()
                zygote.cgroup.remove()
            zygote.close()
            raise
        finally:
            for _, w in errpipes:
                os.close(w)
        fds = [pidfd, zygote.notify_r]
        if zygote.listener is not None:
            fds.append(zygote.listener)
        if plan.apps:
            fds.append(zygote.first_errpipe)
        else:
            os.close(zygote.first_errpipe)
        fds.extend(r for r, _ in errpipes)
        zygote.sock.close()
        zygote.app_sock.close()  # without a plan sent (no apps), the waiting process exits
        started = PodStarted(zygote.pid, zygote.listener is not None, zygote.cgroup.relpath)
        return started, fds

    def _limit(self, relpath: str, plan: PodPlan) -> dict[str, tuple[str, ...]]:
        """Pod limits on the zygote's cgroup; apps with limits of their own get a child, and
        so does an app that gets its own cgroups (privileged: its cgroup is delegated to it,
        see `_cgroupfs`, and must not hold the pod's init, which cgroup2's no-internal-process
        rule would count against the children it makes)."""
        cgroups = self.pool.cgroups
        if plan.limits:
            cgroups.open(relpath).set_limits(**_limit_args(plan.limits))
        app_procs: dict[str, tuple[str, ...]] = {}
        for app in plan.apps:
            if app.limits or app.rootfs.own_cgroups:
                child = cgroups.create(f"{relpath}/app-{app.name}")
                if app.limits:
                    child.set_limits(**_limit_args(app.limits))
                app_procs[app.name] = procs_files(child)
        return app_procs

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.pool.replenish()
        idle_at: float | None = None  # when to replenish the pool, once requests pause
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
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
                    else:
                        with contextlib.suppress(BlockingIOError):
                            while os.read(wake_r, 512):
                                pass
                        _reap()

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


def _limit_args(limits: object) -> dict[str, int | None]:
    names = ("memory_bytes", "cpu_millicores", "cpu_shares", "pids_max")
    return {name: getattr(limits, name) for name in names}


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
    cgroups: CgroupSystem,
    parent: str,
    warm: int,
    metadata_listen: tuple[str, int] | None = None,
) -> NoReturn:
    """Body of the forked launcher process."""
    code = 0
    pool = ZygotePool(cgroups, parent, warm, metadata_listen)
    try:
        os.setsid()
        set_child_subreaper(True)  # pods' PID 1s outlive their zygotes: we reap them
        # Every fork copies the pages it writes to; a garbage collection in a child would
        # write to every object. The launcher makes little garbage, so no collector at all.
        gc.disable()
        seccomp_filter(default_seccomp())  # built once, inherited by every zygote
        last_cap()  # likewise: children never read /proc for it
        gc.freeze()
        _Server(sock, pool).serve()
    except BaseException:
        traceback.print_exc()
        code = 70
    finally:
        pool.close()
        os._exit(code)
