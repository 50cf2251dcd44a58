"""One reaper for PID 1 and kurmad: collects orphans without stealing a known child's status.

Whoever starts a child registers its pid here (`spawn` does both at once) before the next
`reap()`. Both happen in the owner's main thread (PID 1's, or kurmad's, a child subreaper
whose only child of its own is the launcher), so a child that ends at once is still known
when its SIGCHLD is handled.

Why not `waitpid(-1)`: it collects whichever child ended first, including a supervised one,
whose status would then be lost to its owner (and `subprocess` would find ECHILD). So `reap()`
first asks each known pid by name (`waitpid(pid, WNOHANG)`), then peeks at any other ended
child with `waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)`, which leaves it a zombie, and reaps it
by pid only if it is not registered. A known child that ends between the two passes is seen by
the peek and handed to its owner like the others. No status is dropped: known children's go to
their callback, orphans' are counted and the last few kept.

Threads must not start children behind the reaper's back (their statuses would be reaped as
orphans); they register them like everyone else.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

ExitCallback = Callable[[int, int], None]  # (pid, raw wait status)


def describe_status(status: int) -> str:
    """`exit 3` or `killed by SIGKILL` from a raw wait status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            import signal

            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


@dataclass(frozen=True)
class Reaped:
    """One orphan reaped: its pid and raw wait status."""

    pid: int
    status: int


class Reaper:
    """A registry of known children (pid -> callback) and the reaping pass over all children."""

    def __init__(self, keep_orphans: int = 64) -> None:
        self._known: dict[int, ExitCallback] = {}
        self.orphans_reaped = 0
        self.last_orphans: collections.deque[Reaped] = collections.deque(maxlen=keep_orphans)

    def register(self, pid: int, on_exit: ExitCallback) -> None:
        """`on_exit(pid, status)` is called once, from `reap()`, when `pid` has ended."""
        self._known[pid] = on_exit

    def forget(self, pid: int) -> None:
        """Stop tracking `pid`; if it ends later it is reaped as an orphan."""
        self._known.pop(pid, None)

    @property
    def known(self) -> Mapping[int, ExitCallback]:
        return dict(self._known)

    def spawn(
        self,
        argv: Sequence[str],
        on_exit: ExitCallback,
        env: Mapping[str, str] | None = None,
        setsid: bool = False,
        output: str | None = None,
    ) -> int:
        """Start `argv` (PATH is searched) and register it before anything can reap it;
        `output` (a path, opened for appending) takes its stdout and stderr.

        posix_spawn, not subprocess.Popen: a Popen object may waitpid() its pid later (when
        polled or collected), which would race with us for the status.
        """
        actions = []
        if output is not None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            actions = [(os.POSIX_SPAWN_OPEN, 1, output, flags, 0o640), (os.POSIX_SPAWN_DUP2, 1, 2)]
        pid = os.posix_spawnp(
            argv[0],
            list(argv),
            dict(os.environ if env is None else env),
            setsid=setsid,
            file_actions=actions,
        )
        self.register(pid, on_exit)
        return pid

    def reap(self) -> int:
        """Collect every ended child; returns how many. Call on SIGCHLD (and when in doubt)."""
        count = 0
        for pid in list(self._known):
            count += self._reap_known(pid)
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break  # no children at all
            if info is None or info.si_pid == 0:
                break  # children, none ended
            pid = info.si_pid
            got = self._reap_known(pid) if pid in self._known else self._reap_orphan(pid)
            if not got:
                break  # the peek and the reap disagree: never spin on it
            count += got
        return count

    def _reap_known(self, pid: int) -> int:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            # Someone else reaped it (a thread that ignored the rule): the status is gone.
            log.error("known child %d was reaped behind the reaper's back", pid)
            got, status = pid, 255 << 8
        if got == 0:
            return 0
        callback = self._known.pop(pid)
        try:
            callback(pid, status)
        except Exception:
            log.exception("exit callback of pid %d failed", pid)
        return 1

    def _reap_orphan(self, pid: int) -> int:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if got == 0:
            return 0
        self.orphans_reaped += 1
        self.last_orphans.append(Reaped(pid, status))
        log.debug("reaped orphan %d: %s", pid, describe_status(status))
        return 1
