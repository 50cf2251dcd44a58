"""PID 1's reaper with real processes, each scenario in a forked child that is a subreaper.

The child (`in_subreaper`) sets PR_SET_CHILD_SUBREAPER, so orphans of what it starts come to
it as they would to PID 1, runs the scenario, sends the result back through a pipe and
`_exit`s. The test process itself never reaps anything, so pytest's children are safe.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
from collections.abc import Callable
from typing import Any

from kurma.reaper import Reaper, describe_status
from kurma.runtime.linux import set_child_subreaper

from ..waiting import wait_for


def in_subreaper(scenario: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Run `scenario()` in a forked subreaper child; its return value (or its error) comes back."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(r)
        try:
            set_child_subreaper(True)
            result: Any = ("ok", scenario())
        except BaseException as e:  # the test re-raises it
            result = ("error", repr(e))
        try:
            os.write(w, pickle.dumps(result))
        finally:
            os._exit(0)
    os.close(w)
    try:
        data = b""
        deadline = time.monotonic() + timeout
        while chunk := os.read(r, 65536):
            data += chunk
            assert time.monotonic() < deadline, "scenario timed out"
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    assert kind == "ok", value
    return value


def zombies_of(pid: int) -> list[int]:
    """Our zombie children, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            fields = data[data.rfind(b")") + 2 :].split()
            if fields[0] == b"Z" and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def reap_until(reaper: Reaper, done: Callable[[], bool], timeout: float = 30.0) -> None:
    def reaped() -> bool:
        if done():
            return True
        reaper.reap()
        return False

    wait_for(reaped, "the reaper to be done", timeout, every=0.005)


def test_a_thousand_orphans_are_reaped_and_none_is_left() -> None:
    """1000 orphans (a shell's background jobs, left when it exits) are all reaped."""

    def scenario() -> tuple[int, int, list[int]]:
        reaper = Reaper()
        statuses: list[int] = []
        reaper.spawn(
            ["sh", "-c", "for i in $(seq 1000); do true & done"],
            lambda pid, status: statuses.append(status),
        )
        reap_until(reaper, lambda: reaper.orphans_reaped >= 1000 and bool(statuses))
        time.sleep(0.05)
        reaper.reap()
        return reaper.orphans_reaped, statuses[0], zombies_of(os.getpid())

    orphans, status, zombies = in_subreaper(scenario)
    assert (orphans, describe_status(status), zombies) == (1000, "exit 0", [])


def test_known_children_get_their_own_status_while_orphans_die() -> None:
    """Twenty known children with distinct exit codes, amid 500 orphans: each code intact."""

    def scenario() -> tuple[dict[int, int], dict[int, str], int]:
        reaper = Reaper()
        expected: dict[int, int] = {}
        got: dict[int, str] = {}
        reaper.spawn(["sh", "-c", "for i in $(seq 500); do true & done"], lambda p, s: None)
        for code in range(1, 21):
            pid = reaper.spawn(["sh", "-c", f"exit {code}"], lambda p, s: got.__setitem__(p, s))
            expected[pid] = code
        reap_until(reaper, lambda: len(got) == 20 and reaper.orphans_reaped >= 500)
        return expected, {p: describe_status(s) for p, s in got.items()}, len(reaper.known)

    expected, got, still_known = in_subreaper(scenario)
    assert got == {pid: f"exit {code}" for pid, code in expected.items()}
    assert still_known == 0


def test_a_known_child_and_an_orphan_ending_at_once() -> None:
    """Both are zombies before the reaper runs: one pass gives each to the right owner."""

    def scenario() -> tuple[str, int, list[int]]:
        reaper = Reaper()
        got: list[int] = []
        # the shell leaves an orphan that ends right away, then ends itself with 42
        pid = reaper.spawn(["sh", "-c", "(true &); exit 42"], lambda p, s: got.append(s))
        # both ended, neither reaped yet
        wait_for(lambda: len(zombies_of(os.getpid())) >= 2, "two zombies", every=0.005)
        reaper.reap()
        assert pid not in reaper.known
        return describe_status(got[0]), reaper.orphans_reaped, zombies_of(os.getpid())

    assert in_subreaper(scenario) == ("exit 42", 1, [])


def test_a_running_known_child_is_left_alone() -> None:
    """Reaping orphans never touches a known child that still runs; its signal death arrives."""

    def scenario() -> tuple[bool, str]:
        reaper = Reaper()
        got: list[int] = []
        pid = reaper.spawn(["sleep", "30"], lambda p, s: got.append(s))
        reaper.spawn(["sh", "-c", "(true &)"], lambda p, s: None)
        reap_until(reaper, lambda: reaper.orphans_reaped == 1)
        untouched = not got and pid in reaper.known
        os.kill(pid, signal.SIGKILL)
        reap_until(reaper, lambda: bool(got))
        return untouched, describe_status(got[0])

    assert in_subreaper(scenario) == (True, "killed by SIGKILL")


def test_a_failing_callback_does_not_stop_the_pass() -> None:
    """An exception in one owner's callback is logged; the other children are still reaped."""

    def scenario() -> tuple[list[str], int]:
        reaper = Reaper()
        got: list[str] = []

        def bad(pid: int, status: int) -> None:
            raise RuntimeError("owner bug")

        reaper.spawn(["true"], bad)
        reaper.spawn(["sh", "-c", "exit 5"], lambda p, s: got.append(describe_status(s)))
        reap_until(reaper, lambda: bool(got) and not reaper.known)
        return got, len(reaper.known)

    assert in_subreaper(scenario) == (["exit 5"], 0)


def test_no_children_at_all() -> None:
    """With nothing to reap, a pass returns 0 and does not raise."""
    assert in_subreaper(lambda: Reaper().reap()) == 0


def test_spawn_sends_stdout_and_stderr_to_the_output_file(tmp_path) -> None:
    """kurmad's output goes to the kernel log on a machine: both streams, appended."""
    out = tmp_path / "out.log"
    out.write_text("before\n")

    def scenario() -> list[int]:
        reaper = Reaper()
        ended: list[int] = []
        reaper.spawn(
            ["sh", "-c", "echo to-stdout; echo to-stderr >&2"],
            lambda pid, status: ended.append(status),
            output=str(out),
        )
        while not ended:
            reaper.reap()
            time.sleep(0.01)
        return ended

    assert in_subreaper(scenario) == [0]
    assert out.read_text() == "before\nto-stdout\nto-stderr\n"
