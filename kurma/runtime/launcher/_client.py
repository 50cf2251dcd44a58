"""The daemon's side of the launcher: fork it once, then ask it to start pods and handlers."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import threading
from types import TracebackType

from ..cgroups import CgroupSystem
from ._exec import ExecStart
from ._server import launcher_main
from ._shell import Shell, start_in_shell, take_offered
from ._spawn import HandlerStart, PodStart, PodStarted
from ._wire import receive, send


class LauncherError(OSError):
    """The launcher refused or failed a request; the message says what happened."""


class Launcher:
    """A running launcher process. Thread-safe: one request at a time.

    Fork it before the calling process starts threads (kurmad does so first thing). Pods'
    cgroups are made below `cgroup_parent`; `warm` zygotes wait there (see _zygote).
    """

    def __init__(
        self,
        cgroups: CgroupSystem,
        cgroup_parent: str,
        warm: int = 1,
        metadata_listen: tuple[str, int] | None = None,
    ) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        shells, their_shells = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Imported here so the forked child has everything it needs already loaded.
        from .. import _rootfs  # noqa: F401  (probes /proc once, before forking)

        pid = os.fork()
        if pid == 0:
            ours.close()
            shells.close()
            launcher_main(theirs, their_shells, cgroups, cgroup_parent, warm, metadata_listen)
        theirs.close()
        their_shells.close()
        shells.setblocking(False)
        self.pid = pid
        self.cgroups = cgroups
        self._sock = ours
        self._shells = shells  # the launcher's offered shells wait here (see _shell)
        self._lock = threading.Lock()
        self._shells_lock = threading.Lock()
        self._default: tuple[frozenset[str], tuple[str, int] | None, str] = (
            frozenset(),
            metadata_listen,
            cgroup_parent,
        )

    def start_pod(self, request: PodStart) -> tuple[PodStarted, list[int]]:
        """Ask the launcher to start a pod in a shell it makes now (in `request.cgroup`
        when given); returns the answer and descriptors (see PodStarted) the caller owns.
        A start in an offered shell needs no launcher: `take_shell`, `start_in_shell`."""
        answer, fds = self._call(request)
        assert isinstance(answer, PodStarted)
        return answer, fds

    def start_in_shell(self, shell: Shell, request: PodStart) -> tuple[PodStarted, list[int]]:
        """Start a pod in an offered shell (`take_shell`): no round trip through the
        launcher. ConnectionError: its P1 or app was killed while it waited (the shell is
        gone, its cgroup removed)."""
        return start_in_shell(shell, request, self.cgroups)

    def take_shell(self, request: PodStart) -> Shell | None:
        """An offered warm shell that fits the start (the caller starts it or closes it),
        or None."""
        host_namespaces, listen, parent = self._default
        fits = (
            request.plan.host_namespaces == host_namespaces
            and request.metadata_listen == listen
            and request.cgroup_parent in (None, parent)
        )
        if not fits:
            return None
        with self._shells_lock:
            if self._shells.fileno() < 0:
                return None
            return take_offered(self._shells, self.cgroups)

    def start_handler(self, request: HandlerStart) -> tuple[int, int]:
        """Run a handler in a running pod: (its pid inside the pod, its errpipe)."""
        pid, fds = self._call(request)
        return int(pid), fds[0]

    def start_exec(self, request: ExecStart, stdio: list[int]) -> tuple[int, int, int | None]:
        """Run a command in a running app with `stdio` (stdin, stdout, stderr; the caller
        keeps and closes its descriptors), or with no stdio and `tty`: a terminal opened in
        the pod. Returns (its pid as registered, its errpipe, the terminal's master)."""
        pid, fds = self._call(request, stdio)
        return int(pid), fds[0], (fds[1] if len(fds) > 1 else None)

    def ping(self) -> bool:
        return self._call("ping")[0] == "pong"

    def _call(self, request: object, fds: list[int] | None = None) -> tuple[object, list[int]]:
        with self._lock:
            if self._sock.fileno() < 0:
                raise LauncherError(errno.EPIPE, "the launcher is closed")
            send(self._sock, request, fds)
            got = receive(self._sock)
        if got is None:
            raise LauncherError(errno.EPIPE, f"the launcher (pid {self.pid}) has exited")
        (status, payload), fds = got
        if status == "ok":
            return payload, fds
        for fd in fds:
            os.close(fd)
        kind, err, text = payload
        raise LauncherError(err or errno.EIO, f"{kind}: {text}")

    def close(self) -> None:
        """End the shells offered and not taken, then the launcher (it exits when its
        socket closes), and reap it."""
        with self._shells_lock:
            while self._shells.fileno() >= 0:
                shell = take_offered(self._shells, self.cgroups)
                if shell is None:
                    self._shells.close()
                    break
                _end_unused(shell)
        with self._lock:
            if self._sock.fileno() < 0:
                return
            self._sock.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    def __enter__(self) -> Launcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _end_unused(shell: Shell, timeout: float = 2.0) -> None:
    """Close an unused shell: its P1 and app exit on EOF; once P1 has (its pidfd says so),
    the cgroup goes (`remove` retries while the app's process exits)."""
    pidfd = shell.pidfd
    shell.pidfd = None
    shell.close()
    try:
        if pidfd is not None:
            select.select([pidfd], [], [], timeout)
        with contextlib.suppress(OSError):
            shell.cgroup.remove()
    finally:
        if pidfd is not None:
            os.close(pidfd)
