"""Warm zygotes: children of the launcher already sitting in a fresh cgroup of their own.

Moving a process into a cgroup (a write to cgroup.procs) waits for an RCU grace period in
the kernel (cgroup_threadgroup_rwsem): 1-20 ms on these machines, more than all the rest of
a pod start. A process forked inside a cgroup pays nothing. So the launcher keeps `warm`
zygotes ready: each has its cgroup (`<parent>/pod-<hex>`; cgroup2 cannot rename, so the
name stays), has moved in, and waits for one PodStart. It then unshares, forks the pod's
PID 1 (`_spawn.spawn_pod`) and exits; the pod inherits the cgroup, and the launcher, a child
subreaper, becomes podinit's parent. A start with no warm zygote makes one on the spot.

A pod sharing the host's PID namespace is its cgroup: podinit runs in reaper mode and
signals what the cgroup holds, so the zygote hands `spawn_pod` the cgroup.procs file for
podinit's `-r` (`reaper_procs`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
from dataclasses import dataclass
from typing import NoReturn

from ..cgroups import Cgroup, CgroupSystem
from ._app import write_control_file
from ._spawn import spawn_pod
from ._wire import error_of, receive, send


@dataclass
class Zygote:
    pid: int
    sock: socket.socket
    cgroup: Cgroup


def procs_files(cgroup: Cgroup) -> tuple[str, ...]:
    """The cgroup.procs file of `cgroup` in every hierarchy."""
    return tuple(os.path.join(d, "cgroup.procs") for _, d in cgroup.directories())


def reaper_procs(cgroup: Cgroup) -> str | None:
    """The cgroup.procs podinit's reaper mode (`-r`) reads: the pids controller's hierarchy
    (v1 or v2), else the first one; None without any. Every hierarchy holds the same
    processes (each is joined in all of them), so any would do."""
    directory = cgroup.directory("pids")
    if directory is None:
        directory = next((d for _, d in cgroup.directories()), None)
    return os.path.join(directory, "cgroup.procs") if directory is not None else None


class ZygotePool:
    """Up to `warm` ready zygotes; `take` one per pod start, `replenish` when idle."""

    def __init__(self, cgroups: CgroupSystem, parent: str, warm: int) -> None:
        self.cgroups = cgroups
        self.parent = parent
        self.warm = warm
        self._ready: list[Zygote] = []

    def take(self) -> Zygote:
        return self._ready.pop(0) if self._ready else self._make()

    def replenish(self) -> None:
        while len(self._ready) < self.warm:
            self._ready.append(self._make())

    def _make(self) -> Zygote:
        cgroup = self.cgroups.create(f"{self.parent}/pod-{secrets.token_hex(6)}")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except BaseException:
            cgroup.remove()
            raise
        if pid == 0:
            ours.close()
            _zygote_main(theirs, procs_files(cgroup), reaper_procs(cgroup))
        theirs.close()
        return Zygote(pid, ours, cgroup)

    def close(self) -> None:
        """End the idle zygotes (EOF on their sockets) and remove their cgroups."""
        for zygote in self._ready:
            zygote.sock.close()
            with contextlib.suppress(ChildProcessError):
                os.waitpid(zygote.pid, 0)
            with contextlib.suppress(OSError):
                zygote.cgroup.remove()
        self._ready.clear()


def _zygote_main(sock: socket.socket, procs: tuple[str, ...], reaper: str | None) -> NoReturn:
    """Move into the cgroup, wait for one PodStart, start the pod, exit."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for path in procs:
            write_control_file(path, "0")
        got = receive(sock)
        if got is None:
            os._exit(0)
        (request, app_procs), _ = got
        started, fds = spawn_pod(request, app_procs, reaper)
        send(sock, ("ok", started), fds)
    except BaseException as e:
        code = 1
        with contextlib.suppress(OSError):
            send(sock, ("error", error_of(e)))
    os._exit(code)
