"""Forking a pod and forking a handler into a running pod.

A pod starts in a zygote (see _zygote): a child of the launcher that has already moved into
a fresh cgroup. It unshares the pod's namespaces (pid, ipc, uts, net), sets the hostname,
brings `lo` up, opens the metadata listener there, forks P1 and exits. P1 is PID 1 of the
new pid namespace. While the shell is idle, P1 forks the process that will be the pod's
first app, with its pipes, and hands up what a start needs (the notification pipe, that
app's errpipe and socket, the listener); the launcher offers the shell to the daemon (see
_shell). A start then costs no round trip: the daemon sends the first app's plan straight
to that app, which builds its root (`_app.run_app`), and the PodStart to P1, which sets the
hostname, forks the other apps, registers them all with podinit (`pids/<pid>`, and an
`app <name> <pid>` line on the notification pipe), waits at the barrier for the apps'
pre-start handlers when there are several apps, blocks every signal, writes each app its
`go` byte and execs kurma-podinit. An app execs only after that byte, so none runs at all
when P1 failed (it says why on the first app's errpipe; `_exec_podinit` says why an app
need not wait for the exec). A pod on CNI networks (`plan.network_gate`) has P1 wait,
after the barrier and before the go bytes, for `ok` on the FIFO `POD_DIR/network-gate`
(kurmad writes it once the networks are attached, see kurma/runtime/_networks.py); anything
else, or EOF, fails the start. The apps are P1's children already, so podinit reaps them
with no re-parenting. P1 stays in the launcher's mount namespace: podinit pins no mount,
and each app unshares its own.

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

from .._netplan import GATE_NAME
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
from ._app import EXIT_SETUP_FAILED, AppFds, run_app, seccomp_filter
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
    # The cgroup of a shell made for this start (`_zygote.new_pod_cgroup`): the daemon names
    # it in the pod's record before it asks, so no process runs in a cgroup no record names.
    cgroup: str | None = None


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


@dataclass
class _FirstApp:
    """The pod's first app process, forked while the shell is idle, and P1's ends of its
    pipes. Its plan comes from whoever starts the shell (the other end of `sock`: the
    daemon, see _shell, or the launcher), not through P1."""

    pid: int
    sock: socket.socket  # handed up to the launcher with the shell
    out_r: int  # its output, for podinit's log
    err_r: int  # handed up: the daemon reads it
    err_w: int  # P1's copy, close-on-exec: P1 reports its own failure to start here
    ready_r: int  # the pre-start barrier; later apps get copies of ready_w and go_r
    ready_w: int
    go_r: int
    go_w: int  # parked high, close-on-exec: a byte per app just before podinit's exec


def serve_pod_start(
    sock: socket.socket, listener: socket.socket | None, reaper: str | None
) -> NoReturn:
    """P1 of a pod shell. While idle it forks the pod's first app process and hands the
    shell's descriptors up (`ready`: the notification pipe, the first app's errpipe and
    socket, the metadata listener), so a start needs no answer from P1: the starter (see
    _shell) sends the PodStart here and the first app's plan straight to that app, which
    builds its root while P1 registers it and becomes kurma-podinit (`_pod_init`). EOF on
    `sock`: never used, exit (the first app gets EOF on its own socket and exits too)."""
    try:
        first = _fork_first_app(sock, listener)
        notify_r, notify_w = os.pipe()
        up = [notify_r, first.err_r, first.sock.fileno()]
        if listener is not None:
            up.append(listener.fileno())
        send(sock, ("ready", listener is not None), up)
        os.close(notify_r)
        os.close(first.err_r)
        first.sock.close()
        if listener is not None:
            listener.close()
        got = receive(sock)
    except BaseException as e:
        with contextlib.suppress(OSError):
            send(sock, ("error", error_of(e)))
        os._exit(1)
    if got is None:
        os._exit(0)
    (req, app_cgroup_procs), errpipe_ws = got
    sock.close()
    _pod_init(req, app_cgroup_procs, notify_w, first, errpipe_ws, reaper)


def _fork_first_app(*inherited: socket.socket | None) -> _FirstApp:
    """Fork the process that will become the pod's first app, with its pipes made."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (out_r, err_r, ready_r, go_w):
            os.close(fd)
        for other in (ours, *inherited):
            if other is not None:
                other.close()
        _waiting_app(theirs, AppFds(out_w, err_w, ready_w, go_r))
    theirs.close()
    os.close(out_w)
    go_w = _park_cloexec(go_w, _GO_FD)
    return _FirstApp(pid, ours, out_r, err_r, err_w, ready_r, ready_w, go_r, go_w)


def _waiting_app(sock: socket.socket, fds: AppFds) -> NoReturn:
    """Wait for (plan, cgroups, barrier) from the shell's starter; then become the app."""
    try:
        got = receive(sock)
    except BaseException:
        os._exit(1)
    if got is None:
        os._exit(0)  # the shell was never used, or its pod has no apps
    (plan, cgroups, barrier), _ = got
    sock.close()
    if not barrier:
        os.close(fds.ready)
        fds = replace(fds, ready=-1)
    run_app(plan, fds, cgroup_procs=cgroups)


def first_app_message(
    plan: PodPlan, app_cgroup_procs: Mapping[str, tuple[str, ...]]
) -> tuple[AppPlan, tuple[str, ...], bool]:
    """What the shell's starter sends the first app's process: its plan, its own cgroups,
    and whether it waits at the pre-start barrier."""
    app = plan.apps[0]
    return app, tuple(app_cgroup_procs.get(app.name, ())), _has_barrier(plan)


def _has_barrier(plan: PodPlan) -> bool:
    return len(plan.apps) > 1 and any(a.pre_start for a in plan.apps)


def _pod_init(
    req: PodStart,
    app_cgroup_procs: Mapping[str, tuple[str, ...]],
    notify_w: int,
    first: _FirstApp,
    errpipe_ws: list[int],
    reaper: str | None,
) -> NoReturn:
    """P1: set the hostname, fork the apps after the first (which is already building its
    root), register them all, wait at the barrier, then become kurma-podinit (`-r` if
    given). A failure is reported on the first app's errpipe, so the start fails with it."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        plan = req.plan
        if "uts" not in plan.host_namespaces:
            sethostname(plan.name)
        for app in plan.apps[1:]:  # built before the forks: nothing may be imported after a pivot
            if app.seccomp is not None:
                seccomp_filter(app.seccomp)
        if reaper is not None:  # podinit sets it too; from here, orphans of apps are ours
            set_child_subreaper(True)
        barrier = _has_barrier(plan)
        streams: list[tuple[int, str]] = []
        for i, app in enumerate(plan.apps):
            if i == 0:
                pid, out_r = first.pid, first.out_r
            else:
                errpipe = errpipe_ws[i - 1]
                out_r, out_w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    others = (w for w in errpipe_ws if w != errpipe)
                    for fd in (out_r, notify_w, first.ready_r, first.go_w, first.err_w, *others):
                        os.close(fd)
                    for fd, _ in streams:
                        os.close(fd)
                    ready = first.ready_w if barrier else -1
                    fds = AppFds(out_w, errpipe, ready, first.go_r)
                    run_app(app, fds, cgroup_procs=app_cgroup_procs.get(app.name, ()))
                os.close(out_w)
                os.close(errpipe)
            register_app(Path(plan.pod_dir), pid, app.name)
            os.write(notify_w, f"app {app.name} {pid}\n".encode())
            streams.append((out_r, app.name))
        if not plan.apps:
            os.close(first.out_r)
        os.close(first.go_r)
        os.close(first.ready_w)
        if barrier:
            while os.read(first.ready_r, 64):
                pass  # EOF: every app has run its pre-start handler, or failed
        os.close(first.ready_r)
        if plan.network_gate:
            _wait_for_networks(plan.pod_dir)
        _exec_podinit(req, notify_w, streams, reaper, go=(first.go_w, len(plan.apps)))
    except BaseException as e:
        message = f"pod {req.plan.name!r}: cannot start: {e}"
        os.write(2, f"kurma: {message}\n".encode())
        with contextlib.suppress(OSError):
            os.write(first.err_w, f"{EXIT_SETUP_FAILED} {message}\n".encode())
        os._exit(2)


def _wait_for_networks(pod_dir: str) -> None:
    """The network gate: the apps run only once kurmad has attached the pod's networks.
    kurmad opens the FIFO `POD_DIR/network-gate` read-write once every attachment is made
    and writes `ok`; anything else (EOF: kurmad ended first) fails the start."""
    fd = os.open(os.path.join(pod_dir, GATE_NAME), os.O_RDONLY | os.O_CLOEXEC)
    try:
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(fd, 64)
            if not chunk:
                break
            line += chunk
    finally:
        os.close(fd)
    if line != b"ok\n":
        said = line.decode(errors="replace").strip() or "nothing (kurmad ended?)"
        raise OSError(f"its networks were not attached: the network gate said {said}")


def _park_cloexec(fd: int, at_least: int) -> int:
    """`fd` moved to the lowest free number >= `at_least`, close-on-exec."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, at_least)
    os.close(fd)
    return moved


def _exec_podinit(
    req: PodStart,
    notify_w: int,
    streams: list[tuple[int, str]],
    reaper: str | None,
    go: tuple[int, int],
) -> NoReturn:
    """Lay out fd 3 (notifications) and 4... (log streams), block every signal, write each
    app its go byte, exec.

    The apps need not wait for the exec to finish (tearing down this process's memory
    takes a millisecond or two): podinit reaps first thing, so it records an app that ended
    before it ran, and a signal an app sends PID 1 meanwhile stays pending, blocked, until
    podinit reads (and ignores) it. Only a failing exec itself would let an app run for a
    moment before the kernel ends the pod with its PID 1."""
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
    go_w, apps = go
    # One for each app: P1 did not fail. No reader left (EPIPE): every app has failed and
    # ended already, and podinit still has to record them.
    with contextlib.suppress(BrokenPipeError):
        os.write(go_w, b"g" * apps)
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
