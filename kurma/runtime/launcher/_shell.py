"""A warm pod shell and the start of a pod in one: what the launcher and the daemon share.

A shell (made by `_zygote.ZygotePool`) is P1 waiting on `sock` for its PodStart and the
pod's first app process waiting on `app_sock` for its plan, in the pod's cgroup and
namespaces. Starting a pod in it is two sends and no answer (`start_in_shell`): P1 and the
app work at once, and the caller learns of a failure on the apps' errpipes. The launcher
offers each shell it makes to the daemon over a second socket (`offer`, `take_offered`),
so a start from the daemon wakes no process but P1 and the app.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from typing import Any

from .._devices import DEFAULT_DEVICE_RULES, device_rules
from .._plan import PodPlan
from ..cgroups import Cgroup, CgroupSystem
from ._spawn import PodStart, PodStarted, first_app_message
from ._wire import receive, send

Shape = tuple[frozenset[str], tuple[str, int] | None]
"""The host namespaces a shell shares and its metadata listener's address."""


@dataclass
class Shell:
    """A warm pod shell: P1's pid (the launcher's child), its socket, its cgroup, and what
    P1 handed up (see `_spawn.serve_pod_start`): the first app's socket and the
    descriptors the daemon gets at the start. `pidfd` is P1's, once opened."""

    pid: int
    sock: socket.socket
    cgroup: Cgroup
    app_sock: socket.socket
    notify_r: int
    first_errpipe: int
    listener: int | None
    pidfd: int | None = None

    def close(self) -> None:
        """Close what is still held of the shell (P1 and the first app, still waiting,
        then exit on EOF)."""
        self.sock.close()
        self.app_sock.close()
        for fd in (self.notify_r, self.first_errpipe, self.listener, self.pidfd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


def start_in_shell(
    shell: Shell, request: PodStart, cgroups: CgroupSystem
) -> tuple[PodStarted, list[int]]:
    """Hand a start to a shell without waiting for it: the PodStart to P1 (with the
    errpipes of the apps it forks), the first app's plan to that app's waiting process.
    Returns the answer and the descriptors the caller owns (see PodStarted); the shell is
    used up either way. An error leaves no pod: its cgroup is emptied and removed."""
    plan = request.plan
    errpipes = [os.pipe() for _ in plan.apps[1:]]
    try:
        if shell.pidfd is None:
            shell.pidfd = os.pidfd_open(shell.pid)
        app_procs = set_limits(cgroups, shell.cgroup.relpath, plan)
        if plan.apps:  # first: building its root is the longest part of the start
            send(shell.app_sock, first_app_message(plan, app_procs))
        send(shell.sock, (request, app_procs), [w for _, w in errpipes])
    except BaseException:
        for r, _ in errpipes:
            os.close(r)
        with contextlib.suppress(OSError):
            shell.cgroup.kill_all()
            shell.cgroup.remove()
        shell.close()
        raise
    finally:
        for _, w in errpipes:
            os.close(w)
    fds = [shell.pidfd, shell.notify_r]
    if shell.listener is not None:
        fds.append(shell.listener)
    if plan.apps:
        fds.append(shell.first_errpipe)
    else:
        os.close(shell.first_errpipe)
    fds.extend(r for r, _ in errpipes)
    shell.sock.close()
    shell.app_sock.close()  # without a plan sent (no apps), the waiting process exits
    return PodStarted(shell.pid, shell.listener is not None, shell.cgroup.relpath), fds


def set_limits(cgroups: CgroupSystem, relpath: str, plan: PodPlan) -> dict[str, tuple[str, ...]]:
    """Pod limits on the shell's cgroup; apps with limits of their own get a child, and
    so does an app that gets its own cgroups (privileged: its cgroup is delegated to it,
    see `_cgroupfs`, and must not hold the pod's init, which cgroup2's no-internal-process
    rule would count against the children it makes). An app that is not privileged may
    open only its devices (the devices cgroup, or a cgroup2 BPF program; see `_devices`).
    Returns each such app's cgroup.procs files."""
    if plan.limits:
        cgroups.open(relpath).set_limits(**_limit_args(plan.limits))
    # The leaf (P1, the apps without a cgroup of their own, exec) was restricted to the
    # default devices when the shell was made: a privileged pod lifts that, grants add.
    from ._zygote import PROCESS_LEAF  # here: _zygote imports this module

    leaf = cgroups.open(f"{relpath}/{PROCESS_LEAF}")
    granted = device_rules(d for app in plan.apps for d in app.rootfs.devices)
    if any(app.rootfs.privileged for app in plan.apps):
        leaf.allow_all_devices()
    elif granted:
        leaf.restrict_devices((*DEFAULT_DEVICE_RULES, *granted))
    app_procs: dict[str, tuple[str, ...]] = {}
    for app in plan.apps:
        if app.limits or app.rootfs.own_cgroups:
            child = cgroups.create(f"{relpath}/app-{app.name}")
            if not app.rootfs.privileged:
                child.restrict_devices((*DEFAULT_DEVICE_RULES, *device_rules(app.rootfs.devices)))
            if app.limits:
                child.set_limits(**_limit_args(app.limits))
            app_procs[app.name] = procs_files(child)
    return app_procs


def procs_files(cgroup: Cgroup) -> tuple[str, ...]:
    """The cgroup.procs file of `cgroup` in every hierarchy."""
    return tuple(os.path.join(d, "cgroup.procs") for _, d in cgroup.directories())


def _limit_args(limits: object) -> dict[str, int | None]:
    names = ("memory_bytes", "cpu_millicores", "cpu_shares", "pids_max")
    return {name: getattr(limits, name) for name in names}


def offer(sock: socket.socket, shell: Shell) -> None:
    """Send a shell (of the default shape) to the daemon; the launcher's copies close."""
    try:
        shell.pidfd = os.pidfd_open(shell.pid)  # our child: it cannot have been reaped yet
        fds = [shell.sock.fileno(), shell.app_sock.fileno(), shell.notify_r]
        fds += [shell.first_errpipe, shell.pidfd]
        if shell.listener is not None:
            fds.append(shell.listener)
        send(sock, ("shell", shell.pid, shell.cgroup.relpath), fds)
    finally:
        shell.close()


def take_offered(sock: socket.socket, cgroups: CgroupSystem) -> Shell | None:
    """The next offered shell, if one is waiting on the (non-blocking) `sock`; tells the
    launcher it was taken, so it makes the next one once requests pause."""
    try:
        got = receive(sock)
    except BlockingIOError:
        return None
    if got is None:
        return None
    message: Any
    message, fds = got
    _, pid, relpath = message
    p1_sock, app_sock, notify_r, first_errpipe, pidfd, *listener = fds
    with contextlib.suppress(OSError):
        send(sock, ("took", relpath))
    return Shell(
        pid,
        socket.socket(fileno=p1_sock),
        cgroups.open(relpath),
        socket.socket(fileno=app_sock),
        notify_r,
        first_errpipe,
        listener[0] if listener else None,
        pidfd,
    )
