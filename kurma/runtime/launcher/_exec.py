"""Exec: run a command inside a running app, in its mount namespace, as the app runs.

The launcher's child C joins the pod's ipc/uts/net namespaces, the *app's* mount namespace
(setns sets its root and cwd to the app's root: the command sees the app's live files and
mounts, not a fresh root), then the pod's pid namespace, and forks P inside the pod; P forks
the command H, registers it with podinit (`pids/<pid>`, so its exit is recorded like an
app's) and exits, so H is re-parented to podinit. H becomes the app's identity, capabilities,
no_new_privs and seccomp (`_app.run_app(in_app_root=True)`) with the caller's stdio: three
descriptors the daemon passed with the request, or a terminal's slave for all three.
In a pod sharing the host's PID namespace C forks H itself and records its exit, as for
handlers (see _spawn._beside_pod).
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import termios
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .._plan import AppPlan
from .._podinit import register_app, wait_and_record
from ..linux import CLONE_NEWNS, CLONE_NEWPID, setns
from ._app import AppFds, run_app, write_control_file
from ._spawn import NAMESPACE_FLAGS, close_fds_except
from ._wire import receive, send


@dataclass(frozen=True)
class ExecStart:
    """A request to run `argv` in a running app; stdin, stdout, stderr travel beside it."""

    podinit_pid: int
    pod_dir: str
    plan: AppPlan
    app_pid: int  # as registered: inside the pod, or on the host for a host-PID pod
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    tty: bool
    label: str
    host_namespaces: frozenset[str]
    cgroup_procs: tuple[str, ...]
    size: tuple[int, int] = (0, 0)  # rows, cols of a terminal opened in the pod


def app_host_pid(podinit_pid: int, app_pid: int, host_pid_ns: bool) -> int:
    """The host pid of podinit's child `app_pid` (a pid inside the pod)."""
    if host_pid_ns:
        return app_pid
    children = Path(f"/proc/{podinit_pid}/task/{podinit_pid}/children").read_text().split()
    for child in children:
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and line.split()[-1] == str(app_pid):
                return int(child)
    raise ProcessLookupError(f"the app (pid {app_pid} in the pod) is not running")


def spawn_exec(req: ExecStart, stdio: list[int]) -> tuple[int, int, int | None]:
    """Start the command; returns (its pid as registered, its errpipe, the terminal's master
    when `req.tty` came without stdio: the terminal is then opened inside the app's root,
    from the pod's own devpts, so the command sees its name as /dev/pts/N)."""
    if len(stdio) != 3 and not (req.tty and not stdio):
        raise ValueError(f"exec needs stdin, stdout and stderr, got {len(stdio)} descriptors")
    host_pid = "pid" in req.host_namespaces
    app = app_host_pid(req.podinit_pid, req.app_pid, host_pid)
    err_r, err_w = os.pipe()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child = os.fork()
    if child == 0:
        os.close(err_r)
        ours.close()
        _enter_app(req, app, stdio, err_w, theirs, host_pid)
    os.close(err_w)
    theirs.close()
    if not host_pid:
        os.waitpid(child, 0)
    try:
        got = receive(ours)
    finally:
        ours.close()
    if got is None:
        message = os.read(err_r, 4096).decode(errors="replace").strip()
        os.close(err_r)
        raise OSError(f"cannot exec in app {req.plan.name!r}: {message}")
    pid, fds = got
    return int(pid), err_r, (fds[0] if fds else None)


def _enter_app(
    req: ExecStart, app: int, stdio: list[int], err_w: int, res: socket.socket, host_pid: bool
) -> NoReturn:
    h = 0
    res_w = res.fileno()
    master: int | None = None
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if host_pid:  # C waits for H: it must hold nothing of the launcher's (its sockets)
            close_fds_except(err_w, res_w, *stdio)
        else:  # a host-PID command joins the cgroup itself: C must outlive a stop
            for procs in req.cgroup_procs:
                write_control_file(procs, "0")
        # Open every namespace and the pod directory first: in the app's mount namespace,
        # /proc is the pod's and the state directory is out of sight.
        pod_dir = os.open(req.pod_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        joins = [
            (os.open(f"/proc/{req.podinit_pid}/ns/{ns}", os.O_RDONLY), NAMESPACE_FLAGS[ns])
            for ns in ("ipc", "uts", "net")
            if ns not in req.host_namespaces
        ]
        joins.append((os.open(f"/proc/{app}/ns/mnt", os.O_RDONLY), CLONE_NEWNS))
        if not host_pid:
            joins.append((os.open(f"/proc/{req.podinit_pid}/ns/pid", os.O_RDONLY), CLONE_NEWPID))
        for fd, kind in joins:
            setns(fd, kind)
            os.close(fd)
        if not host_pid and os.fork() != 0:
            os._exit(0)  # C: P carries on inside the pod; the launcher's waitpid collects C
        if not stdio:  # a terminal from the app's own /dev/ptmx (the pod's devpts)
            master, slave = os.openpty()
            rows, cols = req.size
            if rows and cols:  # before the command runs: its first look sees the size
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            stdio = [slave, slave, slave]
        fds = AppFds(stdio[1], err_w, stdin=stdio[0], errors=stdio[2], tty=req.tty)
        h = os.fork()
        if h == 0:
            res.close()
            if master is not None:
                os.close(master)
            run_app(
                req.plan,
                fds,
                argv=req.argv,
                in_app_root=True,
                extra_env=req.env,
                cgroup_procs=req.cgroup_procs if host_pid else (),
            )
        for fd in set(stdio):
            os.close(fd)
        register_app(pod_dir, h, req.label)
        send(res, h, [] if master is None else [master])
        if master is not None:
            os.close(master)
    except BaseException as e:
        os.write(err_w, f"{e}\n".encode())
        if h > 0:
            os.kill(h, signal.SIGKILL)
        os._exit(1)
    if not host_pid:
        os._exit(0)  # P: H is re-parented to podinit, which records its exit
    res.close()
    os.close(err_w)
    try:
        wait_and_record(pod_dir, h)
    except BaseException:
        os._exit(1)
    os._exit(0)
