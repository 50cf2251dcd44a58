"""Warm pod shells: a pod's cgroup, namespaces and PID 1, made before the pod is asked for.

Moving a process into a cgroup (a write to cgroup.procs) waits for an RCU grace period in
the kernel (cgroup_threadgroup_rwsem): 1-20 ms on these machines, more than all the rest of
a pod start; making the namespaces and forking the pod's PID 1 costs a few ms more. So the
launcher keeps `warm` shells ready. To make one, a zygote Z (a child of the launcher) moves
into a fresh cgroup `<parent>/pod-<hex>` (cgroup2 cannot rename, so the name stays),
unshares the namespaces a pod owns (pid, ipc, uts, net), brings `lo` up, binds the metadata
listener in the new netns, forks P1 (PID 1 of the new pid namespace), reports P1's pid and
exits; the launcher, a child subreaper, becomes P1's parent. P1 forks the pod's first app
process and reports the shell's descriptors (`_spawn.serve_pod_start`); the two reports
share the socket and may come in either order. A pod that shares host namespaces, or a
start when no shell is warm, gets a shell made on the spot, in the cgroup the daemon chose
and wrote into the pod's record first (`PodStart.cgroup`).

Whose is a `pod-<hex>` cgroup? A warm shell's is the launcher's until the daemon takes the
shell, and the daemon names it in the pod's record before the shell gets its start: so a
pod cgroup no record names holds no pod, only a shell of a launcher (the runtime's reconcile
removes those of a dead daemon's, once that launcher is gone).

A pod sharing the host's PID namespace is its cgroup: podinit runs in reaper mode and
signals what the cgroup holds, so the shell gets the cgroup.procs file for podinit's `-r`
(`reaper_procs`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import time
from typing import NoReturn

from .._devices import DEFAULT_DEVICE_RULES
from ..cgroups import Cgroup, CgroupSystem
from ._app import write_control_file
from ._shell import Shape, Shell, offer, procs_files
from ._spawn import make_namespaces, serve_pod_start
from ._wire import error_of, receive, send

POD_CGROUP_PREFIX = "pod-"  # every pod cgroup's name (and every shell's): `pod-<hex>`
PROCESS_LEAF = "self"
"""A pod's own processes live in `<pod cgroup>/self`; its limits are set on the pod cgroup,
its apps' limits on `app-<name>` and its children's cgroups are `pod-<hex>` beside the leaf:
cgroup2's no-internal-process rule allows controllers in a cgroup only when it holds no
processes itself, so a pod that has children or app limits must keep its processes in a leaf.
"""


def new_pod_cgroup(parent: str) -> str:
    """A fresh pod cgroup's relpath below `parent` (not made yet)."""
    return f"{parent}/{POD_CGROUP_PREFIX}{secrets.token_hex(6)}"


def process_cgroup(cgroups: CgroupSystem, relpath: str) -> Cgroup:
    """Where a pod's own processes are: its leaf, or the pod cgroup itself for a pod made
    before leaves existed (re-adopted from an older record)."""
    leaf = cgroups.open(f"{relpath}/{PROCESS_LEAF}")
    return leaf if leaf.exists() else cgroups.open(relpath)


def reaper_procs(cgroup: Cgroup) -> str | None:
    """The cgroup.procs podinit's reaper mode (`-r`) reads: the pids controller's hierarchy
    (v1 or v2), else the first one; None without any. Every hierarchy holds the same
    processes (each is joined in all of them), so any would do."""
    directory = cgroup.directory("pids")
    if directory is None:
        directory = next((d for _, d in cgroup.directories()), None)
    return os.path.join(directory, "cgroup.procs") if directory is not None else None


class ZygotePool:
    """Makes pod shells: `warm` of the default shape (owning every namespace) offered to the
    daemon ahead of time (see _shell), and any shell on the spot (`take`)."""

    def __init__(
        self,
        cgroups: CgroupSystem,
        parent: str,
        warm: int,
        metadata_listen: tuple[str, int] | None,
        offer_to: socket.socket,
    ) -> None:
        self.cgroups = cgroups
        self.parent = parent
        self.warm = warm
        self.metadata_listen = metadata_listen
        self.offer_to = offer_to
        self._offered: dict[str, int] = {}  # cgroup relpath -> P1's pid, until taken

    def take(
        self,
        host_namespaces: frozenset[str],
        metadata_listen: tuple[str, int] | None,
        cgroup_parent: str | None = None,
        cgroup: str | None = None,
    ) -> Shell:
        """A shell made now for a start the daemon could not make in an offered one; a
        child pod's (`cgroup_parent`: its parent pod's cgroup) below that cgroup; in
        `cgroup` when the daemon named it already."""
        parent = cgroup_parent if cgroup_parent is not None else self.parent
        return self._make((host_namespaces, metadata_listen), cgroup or new_pod_cgroup(parent))

    def replenish(self) -> None:
        """Make and offer shells until `warm` are offered and not yet taken."""
        while len(self._offered) < self.warm:
            shell = self._make((frozenset(), self.metadata_listen), new_pod_cgroup(self.parent))
            pid, relpath = shell.pid, shell.cgroup.relpath
            try:
                offer(self.offer_to, shell)
            except OSError:  # the daemon is gone: nobody takes shells any more
                with contextlib.suppress(OSError):
                    shell.cgroup.kill_all()
                    shell.cgroup.remove()
                return
            self._offered[relpath] = pid

    def taken(self, relpath: str) -> None:
        """The daemon took the offered shell in `relpath`: it is a pod now."""
        self._offered.pop(relpath, None)

    def _make(self, shape: Shape, relpath: str) -> Shell:
        cgroup = self.cgroups.create(relpath)
        leaf = self.cgroups.create(f"{cgroup.relpath}/{PROCESS_LEAF}")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            leaf.restrict_devices(DEFAULT_DEVICE_RULES)  # while idle; `set_limits` adjusts it
            pid = os.fork()
            if pid == 0:
                ours.close()
                _zygote_main(theirs, procs_files(leaf), reaper_procs(cgroup), *shape)
            theirs.close()
            os.waitpid(pid, 0)  # Z exits right after reporting
            p1, has_listener, fds = _shell_reports(ours)
        except BaseException:
            ours.close()
            with contextlib.suppress(OSError):
                cgroup.kill_all()
                cgroup.remove()
            raise
        notify_r, first_errpipe, app_sock, *listener = fds
        return Shell(
            p1,
            ours,
            cgroup,
            socket.socket(fileno=app_sock),
            notify_r,
            first_errpipe,
            listener[0] if has_listener else None,
        )

    def close(self) -> None:
        """Remove the cgroups of the shells offered and never taken, once their P1 has
        ended: the daemon closed them (or died, and the kernel closed them). One that was
        taken after all is a pod whose P1 still runs: left alone."""
        deadline = time.monotonic() + 1.0
        while self._offered and time.monotonic() < deadline:
            for relpath, pid in list(self._offered.items()):
                try:
                    ended = os.waitpid(pid, os.WNOHANG)[0] == pid
                except ChildProcessError:
                    ended = True  # reaped already
                if ended:
                    with contextlib.suppress(OSError):
                        self.cgroups.open(relpath).remove(timeout=0.5)
                    del self._offered[relpath]
            time.sleep(0.01)


def _shell_reports(sock: socket.socket) -> tuple[int, bool, list[int]]:
    """Z's report (P1's pid, as the launcher sees it) and P1's (`ready`, with the shell's
    descriptors), which share the socket and may come in either order."""
    p1: int | None = None
    ready: tuple[bool, list[int]] | None = None
    try:
        while p1 is None or ready is None:
            got = receive(sock)
            if got is None:
                raise OSError("a pod shell died before reporting")
            (status, payload), fds = got
            if status == "ok":
                p1 = payload
            elif status == "ready":
                ready = (payload, fds)
            else:
                for fd in fds:
                    os.close(fd)
                raise OSError(f"cannot make a pod shell: {payload[2]}")
    except BaseException:
        for fd in ready[1] if ready is not None else ():
            os.close(fd)
        raise
    return p1, ready[0], ready[1]


def _zygote_main(
    sock: socket.socket,
    procs: tuple[str, ...],
    reaper: str | None,
    host_namespaces: frozenset[str],
    metadata_listen: tuple[str, int] | None,
) -> NoReturn:
    """Z: move into the cgroup, make the namespaces, fork P1, report its pid, exit."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for path in procs:
            write_control_file(path, "0")
        listener = make_namespaces(host_namespaces, metadata_listen)
        pid = os.fork()
        if pid == 0:
            serve_pod_start(sock, listener, reaper if "pid" in host_namespaces else None)
        send(sock, ("ok", pid))
    except BaseException as e:
        code = 1
        with contextlib.suppress(OSError):
            send(sock, ("error", error_of(e)))
    os._exit(code)
