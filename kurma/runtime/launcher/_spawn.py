"""Forking a pod and forking a handler into a running pod.

A pod starts in a zygote (see _zygote): a child of the launcher that has already moved into
a fresh cgroup. It unshares the pod's namespaces (pid, ipc, uts, net), sets the hostname,
brings `lo` up, opens the metadata listener there, forks P1 and exits. P1 is PID 1 of the
new pid namespace: it forks every app (each becomes itself through `_app.run_app`),
registers them with podinit (`pids/<pid>`, and an `app <name> <pid>` line on the
notification pipe), waits at the barrier for the apps' pre-start handlers when there are
several apps, and execs kurma-podinit with every signal blocked. The apps are P1's children
already, so podinit reaps them with no re-parenting. P1 stays in the launcher's mount
namespace: podinit pins no mount, and each app unshares its own.

A handler after the pod started (post-stop) takes the long way: a child setns()es into the
pod's namespaces and forks P inside the pod, P forks the handler H, registers it and exits,
so H is re-parented to podinit (see podinit/README.md).

A pod in the host's PID namespace ("pid" in `plan.host_namespaces`) gets no PID namespace:
P1 is an ordinary host process and execs podinit in reaper mode, `-r <the pod cgroup's
cgroup.procs>` (the zygote's cgroup; `_zygote.reaper_procs`): a child subreaper that
signals the cgroup's processes where PID 1 would kill(-1). Pids in `pids/`, `exits/` and the
`app` lines are host pids, fork()'s return value as always. A handler of such a pod cannot
become podinit's child (podinit is no ancestor of the launcher's children, and orphans go to
their nearest subreaper ancestor, the launcher), so the launcher's child C joins the pod's
other namespaces, forks H, which joins the pod's cgroup itself, registers and reports it, and
stays: it waits for H and writes H's exit record as podinit would (`_podinit.wait_and_record`).
C itself stays outside the pod's cgroup, so stopping the pod cannot kill it before the record.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .._plan import AppPlan, PodPlan
from .._podinit import podinit_argv, register_app, wait_and_record
from ..linux import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWPID,
    CLONE_NEWUTS,
    set_child_subreaper,
    sethostname,
    setns,
    unshare,
)
from ..metadata._netns import bind_listener, ensure_loopback_up
from ._app import AppFds, run_app, seccomp_filter
from ._app import write_control_file as _write
from ._wire import error_of, receive, send

NAMESPACE_FLAGS = {"ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS, "net": CLONE_NEWNET}
_HIGH_FD = 100  # where P1 parks descriptors while it lays out fds 3, 4, ... for podinit
_GO_FD = 1000  # the apps' go pipe's write end, above anything laid out or parked


@dataclass(frozen=True)
class PodStart:
    """A request to start a prepared pod."""

    plan: PodPlan
    grace: float  # podinit's -g: for processes left when every app has ended
    log_rotate: tuple[int, int]  # podinit's -l: max bytes per log file, rotated files kept
    metadata_listen: tuple[str, int] | None = None  # address, port inside the pod's netns
    cgroup_parent: str | None = None  # a child pod's: its parent pod's cgroup (else the runtime's)


@dataclass(frozen=True)
class PodStarted:
    """The launcher's answer; the descriptors travel beside it (SCM_RIGHTS), in this order:
    pidfd of podinit, the notification pipe, the metadata listener (if any), one errpipe per
    app in plan order. (The daemon has the pod's metadata ready before the start and only
    adds the listener to its loop, so an app's first request waits in the listener's
    backlog for a moment at most.)
    """

    pid: int
    has_listener: bool
    cgroup: str = ""  # the pod's cgroup, relative to the runtime's own


@dataclass(frozen=True)
class HandlerStart:
    """A request to run one of an app's handlers inside a running pod."""

    podinit_pid: int
    pod_dir: str
    plan: AppPlan
    argv: tuple[str, ...]
    label: str  # the registration's name, e.g. "web post-stop"
    host_namespaces: frozenset[str]
    cgroup_procs: tuple[str, ...]
    log_path: str


def make_namespaces(
    host_namespaces: frozenset[str], metadata_listen: tuple[str, int] | None
) -> socket.socket | None:
    """Unshare the namespaces a pod owns (the pid namespace is for the next child), bring
    `lo` up and bind the metadata listener in a new netns; returns the listener."""
    flags = 0 if "pid" in host_namespaces else CLONE_NEWPID
    for ns in ("ipc", "uts", "net"):
        if ns not in host_namespaces:
            flags |= NAMESPACE_FLAGS[ns]
    if flags:
        unshare(flags)
    if "net" in host_namespaces:
        return None
    ensure_loopback_up()
    return bind_listener(*metadata_listen) if metadata_listen is not None else None


def serve_pod_start(
    sock: socket.socket, listener: socket.socket | None, reaper: str | None
) -> NoReturn:
    """P1 of a pod shell: wait for one PodStart, answer with the pod's descriptors, then
    start the apps and become podinit (`_pod_init`). EOF on `sock`: never used, exit.

    The first app's process is forked now, while the shell is idle (a fork of a Python
    process costs 1-2 ms): it waits for its plan (`_waiting_app`)."""
    first = _fork_waiting_app(sock, listener)
    try:
        got = receive(sock)
        if got is None:
            os._exit(0)
        (req, app_cgroup_procs), _ = got
        plan = req.plan
        if "uts" not in plan.host_namespaces:
            sethostname(plan.name)
        for app in plan.apps:  # built before the forks: nothing may be imported after a pivot
            if app.seccomp is not None:
                seccomp_filter(app.seccomp)
        notify_r, notify_w = os.pipe()
        errpipes = [os.pipe() for _ in plan.apps]
        fds = [notify_r]
        if listener is not None:
            fds.append(listener.detach())
        fds.extend(r for r, _ in errpipes)
        send(sock, ("ok", PodStarted(os.getpid(), listener is not None)), fds)
    except BaseException as e:
        with contextlib.suppress(OSError):
            send(sock, ("error", error_of(e)))
        os._exit(1)
    sock.close()
    for fd in fds:
        os.close(fd)
    _pod_init(req, app_cgroup_procs, notify_w, [w for _, w in errpipes], reaper, first)


def _fork_waiting_app(*inherited: socket.socket | None) -> tuple[int, socket.socket]:
    """Fork a process that will become the pod's first app; returns (pid, its socket)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        for other in (ours, *inherited):
            if other is not None:
                other.close()
        _waiting_app(theirs)
    theirs.close()
    return pid, ours


def _waiting_app(sock: socket.socket) -> NoReturn:
    """Wait for (plan, cgroups, which optional fds) and the fds; then become the app."""
    try:
        got = receive(sock)
    except BaseException:
        os._exit(1)
    if got is None:
        os._exit(0)  # the shell was never used
    (plan, cgroups, optional), fds = got
    sock.close()
    out, errpipe, *rest = fds
    extra = dict(zip(optional, rest, strict=True))
    run_app(plan, AppFds(out, errpipe, **extra), cgroup_procs=cgroups)


def _pod_init(
    req: PodStart,
    app_cgroup_procs: Mapping[str, tuple[str, ...]],
    notify_w: int,
    errpipe_ws: list[int],
    reaper: str | None,
    first: tuple[int, socket.socket] | None = None,
) -> NoReturn:
    """P1: start the apps (the first in `first`, a process waiting for its plan, if given;
    the others forked now), register them, then become kurma-podinit (`-r` if given)."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        plan = req.plan
        if reaper is not None:  # podinit sets it too; from here, orphans of apps are ours
            set_child_subreaper(True)
        barrier = len(plan.apps) > 1 and any(a.pre_start for a in plan.apps)
        ready_r, ready_w = os.pipe() if barrier else (-1, -1)
        # Every app waits for EOF on `go` before its exec. Only P1 keeps the write end, close-
        # on-exec and parked high (clear of the fds laid out for podinit), so it closes when
        # P1 becomes kurma-podinit: no app runs while PID 1 is still this Python process.
        go_r, go_w = os.pipe()
        go_w = _park_cloexec(go_w, _GO_FD)
        streams: list[tuple[int, str]] = []
        for app, errpipe in zip(plan.apps, errpipe_ws, strict=True):
            out_r, out_w = os.pipe()
            cgroups = app_cgroup_procs.get(app.name, ())
            if first is not None:
                pid, app_sock = first
                first = None
                optional = {"ready": ready_w, "go": go_r}
                given = {k: fd for k, fd in optional.items() if fd >= 0}
                send(app_sock, (app, cgroups, tuple(given)), [out_w, errpipe, *given.values()])
                app_sock.close()
            else:
                pid = os.fork()
                if pid == 0:
                    for fd in (out_r, notify_w, ready_r, go_w, *(r for r, _ in streams)):
                        if fd >= 0:
                            os.close(fd)
                    fds = AppFds(out_w, errpipe, ready_w, go_r)
                    run_app(app, fds, cgroup_procs=cgroups)
            os.close(out_w)
            os.close(errpipe)
            register_app(Path(plan.pod_dir), pid, app.name)
            os.write(notify_w, f"app {app.name} {pid}\n".encode())
            streams.append((out_r, app.name))
        os.close(go_r)
        if barrier:
            os.close(ready_w)
            while os.read(ready_r, 64):
                pass  # EOF: every app has run its pre-start handler, or failed
        if first is not None:  # a pod without apps: the waiting process is not needed
            first[1].close()
        _exec_podinit(req, notify_w, streams, reaper)
    except BaseException as e:
        os.write(2, f"kurma: pod {req.plan.name!r}: cannot start: {e}\n".encode())
        os._exit(2)


def _park_cloexec(fd: int, at_least: int) -> int:
    """`fd` moved to the lowest free number >= `at_least`, close-on-exec."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, at_least)
    os.close(fd)
    return moved


def _exec_podinit(
    req: PodStart, notify_w: int, streams: list[tuple[int, str]], reaper: str | None
) -> NoReturn:
    """Lay out fd 3 (notifications) and 4... (log streams), block every signal, exec."""
    parked = [
        fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD)
        for fd in (notify_w, *(fd for fd, _ in streams))
    ]
    os.dup2(parked[0], 3)
    logs = []
    for i, (fd, (_, name)) in enumerate(zip(parked[1:], streams, strict=True)):
        os.dup2(fd, 4 + i)
        logs.append((4 + i, name))
    argv = podinit_argv(
        Path(req.plan.pod_dir), grace=req.grace, logs=logs, rotate=req.log_rotate, reaper=reaper
    )
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    os.execv(argv[0], argv)


def spawn_handler(req: HandlerStart) -> tuple[int, int]:
    """Run a handler in the pod; returns (its pid as registered: inside the pod, or the host
    pid for a pod in the host's PID namespace; its errpipe)."""
    host_pid = "pid" in req.host_namespaces
    err_r, err_w = os.pipe()
    res_r, res_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(err_r)
        os.close(res_r)
        if host_pid:
            _beside_pod(req, err_w, res_w)
        _enter_pod(req, err_w, res_w)
    os.close(err_w)
    os.close(res_w)
    if not host_pid:
        os.waitpid(child, 0)  # short-lived; with a host pid C stays: the launcher reaps it later
    try:
        text = os.read(res_r, 64)
    finally:
        os.close(res_r)
    if not text:
        message = os.read(err_r, 4096).decode(errors="replace").strip()
        os.close(err_r)
        raise OSError(f"cannot enter pod (podinit pid {req.podinit_pid}): {message}")
    return int(text), err_r


def _join_namespaces(req: HandlerStart) -> None:
    """setns into the pod's ipc, uts and net namespaces, those it does not share with the host."""
    for ns in ("ipc", "uts", "net"):
        if ns not in req.host_namespaces:
            setns(f"/proc/{req.podinit_pid}/ns/{ns}", NAMESPACE_FLAGS[ns])


def _open_log(req: HandlerStart) -> int:
    return os.open(req.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


def _enter_pod(req: HandlerStart, err_w: int, res_w: int) -> NoReturn:
    """C: join the pod, fork P inside it; P forks the handler, registers it and exits."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for procs in req.cgroup_procs:
            _write(procs, "0")
        _join_namespaces(req)
        setns(f"/proc/{req.podinit_pid}/ns/pid", CLONE_NEWPID)
        p = os.fork()
        if p == 0:
            out = _open_log(req)
            h = os.fork()
            if h == 0:
                run_app(req.plan, AppFds(out, err_w), argv=req.argv)
            register_app(Path(req.pod_dir), h, req.label)
            os.write(res_w, str(h).encode())
            os._exit(0)
        os.waitpid(p, 0)
        os._exit(0)
    except BaseException as e:
        os.write(err_w, f"{e}\n".encode())
        os._exit(1)


def _beside_pod(req: HandlerStart, err_w: int, res_w: int) -> NoReturn:
    """C of a pod in the host's PID namespace: fork the handler H and be its recorder.

    C joins the pod's other namespaces but not its cgroup (stopping the pod signals the
    cgroup and must not end C before H's record); H joins the cgroup first thing
    (`run_app`'s cgroup_procs). C registers H, reports its pid, waits for it and writes
    `exits/<pid>` as podinit would, then exits; the launcher reaps C.
    """
    h = 0
    pod_dir = Path(req.pod_dir)
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # C lives as long as H: it must not hold the launcher's sockets (a zygote waits for
        # EOF on its own, the daemon for the launcher's) or anything else of the launcher's.
        close_fds_except(err_w, res_w)
        _join_namespaces(req)
        out = _open_log(req)
        h = os.fork()
        if h == 0:
            os.close(res_w)
            run_app(req.plan, AppFds(out, err_w), argv=req.argv, cgroup_procs=req.cgroup_procs)
        os.close(out)
        register_app(pod_dir, h, req.label)
        os.write(res_w, str(h).encode())
    except BaseException as e:
        os.write(err_w, f"{e}\n".encode())
        if h > 0:  # H must not run unrecorded
            os.kill(h, signal.SIGKILL)
            os.waitpid(h, 0)
        os._exit(1)
    os.close(res_w)
    os.close(err_w)  # H holds its own copy until its exec: the errpipe's EOF is H's
    try:
        wait_and_record(pod_dir, h)
    except FileNotFoundError:
        os._exit(0)  # the pod was destroyed meanwhile (its directory is gone): nobody to tell
    except BaseException as e:
        os.write(2, f"kurma: pod {pod_dir.name}: {req.label}: no exit record: {e}\n".encode())
        os._exit(1)
    os._exit(0)


def close_fds_except(*keep: int) -> None:
    """Close every descriptor above 2 but `keep`."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))
