"""kurmad's supervisor: the backoff policy with a fake clock, then real commands standing in."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping, Sequence

from kurma.backoff import Backoff
from kurma.init._supervisor import KURMAD_BACKOFF, State, Supervisor
from kurma.reaper import ExitCallback, Reaper

from .test_reaper import in_subreaper, reap_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeReaper(Reaper):
    """Spawns nothing: hands out pids and lets the test end them."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[int] = []

    def spawn(
        self,
        argv: Sequence[str],
        on_exit: ExitCallback,
        env: Mapping[str, str] | None = None,
        setsid: bool = False,
        output: str | None = None,
    ) -> int:
        pid = 1000 + len(self.spawned)
        self.spawned.append(pid)
        self.register(pid, on_exit)
        return pid

    def end(self, pid: int, code: int) -> None:
        self._known.pop(pid)(pid, code << 8)


def crash_loop(uptimes: list[float]) -> list[float]:
    """Start, then for each uptime: run that long, crash, wait out the backoff. The delays."""
    clock, reaper = FakeClock(), FakeReaper()
    sup = Supervisor("kurmad", ["kurmad"], reaper, KURMAD_BACKOFF, clock=clock)
    sup.start()
    delays = []
    for up in uptimes:
        clock.now += up
        reaper.end(sup.pid or 0, 3)
        assert sup.state is State.WAITING and sup.restart_at is not None
        delays.append(sup.restart_at - clock.now)
        sup.tick()
        assert sup.state is State.WAITING  # not before its time
        clock.now = sup.restart_at
        sup.tick()
        assert sup.state is State.RUNNING
    return delays


def test_backoff_doubles_from_one_second_up_to_thirty() -> None:
    """A child that crashes at once waits 1, 2, 4, 8, 16, 30, 30 s."""
    assert crash_loop([0.1] * 7) == [1, 2, 4, 8, 16, 30, 30]


def test_backoff_resets_after_sixty_seconds_up() -> None:
    """Once it stayed up 60 s, the next crash waits 1 s again."""
    assert crash_loop([0.1, 0.1, 0.1, 60.0, 0.1]) == [1, 2, 4, 1, 2]


def test_state_changes_are_kept_in_order() -> None:
    """The history holds each change: running, waiting, running."""
    clock, reaper = FakeClock(), FakeReaper()
    sup = Supervisor("kurmad", ["kurmad"], reaper, clock=clock)
    sup.start()
    reaper.end(1000, 3)
    clock.now = 5
    sup.tick()
    assert [c.state for c in sup.history] == [State.RUNNING, State.WAITING, State.RUNNING]
    assert "exit 3" in sup.history[1].message
    assert sup.restarts == 1


def test_a_command_that_cannot_start_is_retried() -> None:
    """A missing program is not an exception: the supervisor waits and tries again."""
    clock = FakeClock()
    sup = Supervisor("kurmad", ["/nonexistent/kurmad"], Reaper(), clock=clock)
    assert sup.start() is None
    assert sup.state is State.WAITING and sup.next_deadline() == 1.0


# --- real commands, in a forked subreaper (see test_reaper) -------------------------------


def pump_for(reaper: Reaper) -> Callable[[float], None]:
    def pump(seconds: float) -> None:
        time.sleep(min(seconds, 0.01))
        reaper.reap()

    return pump


def test_a_crashing_command_is_restarted_with_backoff() -> None:
    """`sh -c 'exit 3'` is started again after 0.1, 0.2, 0.4, 0.4 s (a scaled-down policy)."""

    def scenario() -> tuple[list[float], list[str]]:
        reaper = Reaper()
        sup = Supervisor("standin", ["sh", "-c", "exit 3"], reaper, Backoff(0.1, 0.4, reset=60))
        sup.start()
        starts = [time.monotonic()]

        def step() -> bool:
            before = sup.restarts
            sup.tick()
            if sup.restarts != before:
                starts.append(time.monotonic())
            return len(starts) == 5

        reap_until(reaper, step)
        sup.stop(pump_for(reaper), grace=1)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        return gaps, [c.message for c in sup.history if c.state is State.WAITING]

    gaps, waits = in_subreaper(scenario)
    for gap, expected in zip(gaps, [0.1, 0.2, 0.4, 0.4], strict=True):
        assert expected <= gap < expected + 0.3
    assert all("exit 3" in w for w in waits)


def test_stop_terminates_a_running_command() -> None:
    """`sleep` ends on SIGTERM at once; the supervisor is stopped and does not restart it."""

    def scenario() -> tuple[str, float, int]:
        reaper = Reaper()
        sup = Supervisor("standin", ["sleep", "60"], reaper)
        sup.start()
        t0 = time.monotonic()
        sup.stop(pump_for(reaper), grace=5)
        took = time.monotonic() - t0
        sup.tick()
        return sup.history[-1].message, took, sup.restarts

    message, took, restarts = in_subreaper(scenario)
    assert message.endswith("killed by SIGTERM") and took < 1 and restarts == 0


def test_stop_kills_a_command_that_ignores_sigterm_after_the_grace() -> None:
    """A child ignoring SIGTERM gets SIGKILL once the grace period is over."""

    def scenario() -> tuple[str, float]:
        reaper = Reaper()
        argv = ["sh", "-c", "trap '' TERM; echo > /dev/null; exec sleep 60"]
        sup = Supervisor("standin", argv, reaper)
        sup.start()
        time.sleep(0.2)  # let the trap be set
        t0 = time.monotonic()
        sup.stop(pump_for(reaper), grace=0.5)
        return sup.history[-1].message, time.monotonic() - t0

    message, took = in_subreaper(scenario)
    assert message.endswith("killed by SIGKILL") and 0.5 <= took < 2


def test_an_adopted_child_is_supervised_like_one_it_started() -> None:
    """/init starts kurmad before kurma-init runs: adopting that pid makes it RUNNING; its
    exit is reaped with its status (not as an orphan's) and a restart is scheduled."""

    def scenario() -> tuple[bool, str, bool, str, int]:
        reaper = Reaper()
        early = os.posix_spawnp("sh", ["sh", "-c", "sleep 0.2; exit 4"], dict(os.environ))
        sup = Supervisor("kurmad", ["sleep", "60"], reaper, Backoff(30, 30, reset=60))
        adopted = sup.adopt(early)
        running = sup.state.value
        reap_until(reaper, lambda: sup.pid is None)
        stranger = sup.adopt(1)  # not our child: refused
        return adopted, running, stranger, sup.history[-1].message, reaper.orphans_reaped

    adopted, running, stranger, last, orphans = in_subreaper(scenario)
    assert adopted and running == "running" and not stranger
    assert "exit 4" in last and orphans == 0
