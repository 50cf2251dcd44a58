"""One supervised child of PID 1 (kurmad): started, restarted with backoff, stopped.

The supervisor never blocks and never waits on its own: the reaper calls `_exited` when the
child ends, and the main loop calls `tick()` at `next_deadline()` to restart it. Backoff is
1 s doubling to 30 s, and back to 1 s once the child stayed up 60 s (`KURMAD_BACKOFF`, the
tree's one `Backoff`); time comes from a clock given to it, so tests of the policy take no
real time.

Stop is SIGTERM, a grace period, then SIGKILL; `stop()` needs a `pump(seconds)` that waits
at most that long and lets the reaper run (the main loop's signal wait, in PID 1).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..backoff import Backoff
from ..reaper import Reaper, describe_status
from ._procstat import stat_fields

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Pump = Callable[[float], None]


KURMAD_BACKOFF = Backoff(initial=1.0, maximum=30.0, reset=60.0)


class State(enum.Enum):
    """Where the supervised child is."""

    STOPPED = "stopped"  # not started, or stopped on purpose
    RUNNING = "running"
    WAITING = "waiting"  # ended; restart due at `restart_at`
    STOPPING = "stopping"  # SIGTERM sent, waiting for it to end


@dataclass(frozen=True)
class Change:
    """One state change, as kept in the bounded history."""

    at: float
    state: State
    message: str


class Supervisor:
    """Keeps `argv` running as a child registered with `reaper`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        reaper: Reaper,
        backoff: Backoff = KURMAD_BACKOFF,
        grace: float = 10.0,
        clock: Clock = time.monotonic,
        env: Mapping[str, str] | None = None,
        history: int = 32,
        output: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.reaper = reaper
        self.backoff = backoff
        self.grace = grace
        self.clock = clock
        self.env = env
        self.output = output  # where its stdout and stderr go (None: PID 1's, the console)
        self.state = State.STOPPED
        self.pid: int | None = None
        self.started_at: float | None = None
        self.restart_at: float | None = None
        self.restarts = 0
        self.last_status: int | None = None
        self.history: collections.deque[Change] = collections.deque(maxlen=history)
        self._failures = 0  # quick failures in a row: the backoff's count

    def __str__(self) -> str:
        return f"service[{self.name}]"

    def _set(self, state: State, message: str) -> None:
        """Every state change goes through here: one log line, one history entry."""
        self.state = state
        self.history.append(Change(self.clock(), state, message))
        log.info("%s(%s): %s", self, state.value, message)

    def start(self) -> int | None:
        """Start the child now; returns its pid, or None if it could not be started (retried)."""
        self.restart_at = None
        try:
            pid = self.reaper.spawn(self.argv, self._exited, env=self.env, output=self.output)
        except OSError as e:
            self.pid = None
            self._schedule_restart(0.0, f"cannot start {self.argv[0]}: {e}")
            return None
        self.pid, self.started_at = pid, self.clock()
        self._set(State.RUNNING, f"pid {pid}")
        return pid

    def adopt(self, pid: int) -> bool:
        """Supervise `pid`, a child started before us (the initrd's /init starts kurmad before
        PID 1's Python runs); False when it is not our living child (then start() it)."""
        if not _is_living_child(pid):
            return False
        self.reaper.register(pid, self._exited)
        if not _is_living_child(pid):  # ended (and reaped as an orphan) in between
            self.reaper.forget(pid)
            return False
        self.restart_at = None
        self.pid, self.started_at = pid, self.clock()
        self._set(State.RUNNING, f"pid {pid} (adopted)")
        return True

    def _exited(self, pid: int, status: int) -> None:
        if pid != self.pid:
            return
        self.pid, self.last_status = None, status
        if self.state is State.STOPPING:
            self._set(State.STOPPED, f"pid {pid} {describe_status(status)}")
            return
        uptime = self.clock() - (self.started_at or self.clock())
        self._schedule_restart(uptime, f"pid {pid} {describe_status(status)} after {uptime:.1f}s")

    def _schedule_restart(self, uptime: float, why: str) -> None:
        if uptime >= self.backoff.reset_after:
            self._failures = 0
        self._failures += 1
        delay = self.backoff.delay(self._failures)
        self.restart_at = self.clock() + delay
        self._set(State.WAITING, f"{why}; restart in {delay:g}s")

    def next_deadline(self) -> float | None:
        """When `tick()` has something to do (clock time), or None."""
        return self.restart_at if self.state is State.WAITING else None

    def tick(self) -> None:
        """Restart the child if its backoff has run out."""
        due = self.restart_at
        if self.state is State.WAITING and due is not None and self.clock() >= due:
            self.restarts += 1
            self.start()

    def stop(self, pump: Pump, grace: float | None = None) -> None:
        """SIGTERM, up to `grace` seconds, then SIGKILL; returns once it was reaped."""
        if self.pid is None:
            self.restart_at = None
            self._set(State.STOPPED, "stopped (was not running)")
            return
        grace = self.grace if grace is None else grace
        pid = self.pid
        self._set(State.STOPPING, f"SIGTERM to pid {pid}, {grace:g}s grace")
        self._kill(pid, signal.SIGTERM)
        if not self._wait_gone(pump, grace):
            log.warning("%s: pid %d still there after %gs: SIGKILL", self, pid, grace)
            self._kill(pid, signal.SIGKILL)
            if not self._wait_gone(pump, 5.0):
                log.error("%s: pid %d survives SIGKILL", self, pid)

    def _wait_gone(self, pump: Pump, seconds: float) -> bool:
        deadline = self.clock() + seconds
        while self.pid is not None:
            left = deadline - self.clock()
            if left <= 0:
                return False
            pump(left)
        return True

    @staticmethod
    def _kill(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # ended; the reaper has its status
            os.kill(pid, sig)


def _is_living_child(pid: int) -> bool:
    """Whether `pid` is a child of this process that has not been reaped."""
    fields = stat_fields(pid)
    return fields is not None and len(fields) > 1 and int(fields[1]) == os.getpid()  # 4: ppid
