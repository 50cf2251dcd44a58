"""kurma-init as PID 1 of a fresh PID (and UTS, mount) namespace, in test mode.

`unshare --pid --fork --mount-proc --uts --kill-child python -m kurma.init.main --test-mode`
with a boot config file and a stand-in for kurmad: a shell script that records each start
(`<pid in the namespace> <hostname>`), leaves orphans behind on its first start, and then
`exec`s sleep. The test finds processes of the namespace through the host's /proc (NSpid).
Every namespace is SIGKILLed at its PID 1 on the way out, which ends all its processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..waiting import wait_for

pytestmark = pytest.mark.root

STANDIN = """\
echo "$$ $(hostname)" >> {dir}/starts
if [ ! -e {dir}/orphans-done ]; then
  for i in $(seq {orphans}); do (true &); done
  touch {dir}/orphans-done
fi
exec sleep 600
"""


def _status_field(pid: int | str, name: str) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


@dataclass
class Pid1:
    proc: subprocess.Popen[bytes]
    dir: Path
    host_pid: int  # PID 1 of the namespace, as the host sees it

    def namespace_pids(self) -> dict[int, int]:
        """Inner pid -> host pid of every process in the namespace."""
        ns = os.readlink(f"/proc/{self.host_pid}/ns/pid")
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                    continue
            except OSError:
                continue
            nspid = _status_field(entry, "NSpid")
            if nspid:
                found[int(nspid.split()[-1])] = int(entry)
        return found

    def zombies(self) -> list[int]:
        return [
            host
            for host in self.namespace_pids().values()
            if (_status_field(host, "State") or "").startswith("Z")
        ]

    def starts(self) -> list[tuple[int, str]]:
        try:
            lines = (self.dir / "starts").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [(int(pid), name) for pid, name in (line.split() for line in lines)]

    def output(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, out.decode(), err.decode()


@pytest.fixture
def pid1(tmp_path: Path) -> Iterator[Callable[..., Pid1]]:
    started: list[Pid1] = []

    def start(orphans: int = 300, command: str | None = None, *extra: str) -> Pid1:
        (tmp_path / "kurma.yml").write_text("hostname: kurma-test\nshutdown_budget: 3\n")
        (tmp_path / "standin.sh").write_text(STANDIN.format(dir=tmp_path, orphans=orphans))
        argv = ["unshare", "--pid", "--fork", "--mount-proc", "--uts", "--kill-child"]
        argv += [sys.executable, "-m", "kurma.init.main", "--test-mode"]
        argv += ["--config", str(tmp_path / "kurma.yml"), "--cmdline", ""]
        argv += ["--kurmad-command", command or f"sh {tmp_path}/standin.sh"]
        argv += ["--restart-initial", "0.3", "--restart-max", "1", *extra]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        children = f"/proc/{proc.pid}/task/{proc.pid}/children"
        try:
            found = wait_for(lambda: Path(children).read_text().split(), "PID 1", 20.0)
            host = int(found[0])  # type: ignore[index]
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
        p = Pid1(proc, tmp_path, host)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.host_pid, signal.SIGKILL)  # ends the whole namespace
            p.proc.kill()
            p.proc.communicate()


def test_orphans_in_the_namespace_are_reaped(pid1: Callable[..., Pid1]) -> None:
    """1000 orphans left by the stand-in end up with PID 1, which reaps every one."""
    p = pid1(orphans=1000)
    wait_for(lambda: (p.dir / "orphans-done").exists(), "orphans made", 20.0)
    wait_for(lambda: not p.zombies(), "no zombies", 20.0)
    assert len(p.starts()) == 1  # the stand-in itself was left alone


def test_the_stand_in_is_restarted_when_killed(pid1: Callable[..., Pid1]) -> None:
    """SIGKILL to the supervised child: PID 1 starts it again after its backoff."""
    p = pid1(orphans=0)
    first = wait_for(p.starts, "first start", 20.0)[0]  # type: ignore[index]
    assert first[1] == "kurma-test"  # the hostname step ran in the namespace's UTS
    host = p.namespace_pids()[first[0]]
    killed = time.monotonic()
    os.kill(host, signal.SIGKILL)
    wait_for(lambda: len(p.starts()) == 2, "second start", 20.0)
    assert time.monotonic() - killed >= 0.3
    assert not p.zombies()


@pytest.mark.parametrize(
    ("sig", "action"),
    [
        (signal.SIGTERM, "poweroff"),
        (signal.SIGPWR, "poweroff"),
        (signal.SIGINT, "reboot"),
        (signal.SIGUSR1, "halt"),
        (signal.SIGUSR2, "poweroff"),
    ],
)
def test_shutdown_signal_stops_the_stand_in_and_reports(
    pid1: Callable[..., Pid1], sig: int, action: str
) -> None:
    """The signal's action is printed after the stand-in was stopped; PID 1 returns 0."""
    p = pid1(orphans=0)
    wait_for(p.starts, "first start", 20.0)
    os.kill(p.host_pid, sig)
    code, out, err = p.output()
    assert code == 0, err
    assert out.strip().splitlines()[-1] == f"kurma-init: shutdown: {action}"
    assert "service[kurmad](stopped)" in err and "killed by SIGTERM" in err


def test_boot_goes_on_when_kurmad_cannot_start(pid1: Callable[..., Pid1]) -> None:
    """A kurmad command that does not exist: retried, the loop runs, shutdown still works."""
    p = pid1(command="/nonexistent/kurmad")
    time.sleep(1.5)  # signals are handled once the first step ran
    os.kill(p.host_pid, signal.SIGTERM)
    code, out, err = p.output()
    assert code == 0, err
    assert "cannot start /nonexistent/kurmad" in err
    assert "step console: skipped" in err  # the boot ran to its end
    assert out.strip().endswith("kurma-init: shutdown: poweroff")


def test_an_exception_in_a_step_does_not_end_pid1(pid1: Callable[..., Pid1]) -> None:
    """The hostname step raises: it is logged as failed, the later steps run, kurmad starts,
    orphans are still reaped, and a shutdown signal still works."""
    p = pid1(50, None, "--fail-step", "hostname")
    wait_for(lambda: (p.dir / "orphans-done").exists(), "orphans made", 20.0)
    wait_for(lambda: not p.zombies(), "no zombies", 20.0)
    assert p.starts()[0][1] != "kurma-test"  # the failed step did not set the hostname
    os.kill(p.host_pid, signal.SIGTERM)
    code, out, err = p.output()
    assert code == 0, err
    assert "step hostname: failed" in err and "injected failure of step hostname" in err
    assert "step kurmad: ok" in err and "step console: skipped" in err
    assert out.strip().endswith("kurma-init: shutdown: poweroff")
