"""kurma-podinit, driven as the real binary in a PID namespace of its own (dumb-init style).

Each pod is `unshare --pid --kill-child --mount-proc kurma-podinit POD_DIR` with fd 3 a pipe to
the test. Apps enter it the way the launcher will: `nsenter --pid --mount` runs a small
in-pod parent that forks the app, registers it in POD_DIR/pids/ and exits, so the app is
re-parented to podinit; or, as the launcher starts a pod, PID 1 of the new namespace forks and
registers them and then execs podinit (LAUNCH). Apps print `ready (pid: N)` and every signal
they get. Every pod is SIGKILLed on the way out, which ends every process in its namespace.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kurma.runtime import _podinit
from kurma.runtime._podinit import (
    SIGNAL_KILL_APPS,
    SIGNAL_TERMINATE_APPS,
    Event,
    Notification,
    build_podinit,
    parse_notification,
    read_exit_records,
)
from kurma.runtime.cgroups import Cgroup, CgroupSystem
from kurma.runtime.launcher._zygote import procs_files, reaper_procs

from ..waiting import wait_for

DEADLINE = 10.0

# The app: reports readiness and signals; SIGUSR1 makes it exit with --exit-on-usr1's code.
APP = r"""
import os, signal, sys
args = sys.argv[1:]
code = int(args[args.index("--exit-on-usr1") + 1]) if "--exit-on-usr1" in args else None
def report(sig, frame):
    print(f"signal {sig}", flush=True)
    if sig == signal.SIGUSR1 and code is not None:
        os._exit(code)
for s in (signal.SIGHUP, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
    signal.signal(s, report)
if "--ignore-term" in args:
    signal.signal(signal.SIGTERM, report)
print(f"ready (pid: {os.getpid()})", flush=True)
while True:
    signal.pause()
"""

# The in-pod parent, as the launcher's second fork will be: fork, register, exit.
SPAWN = r"""
import os, sys
from pathlib import Path
from kurma.runtime._podinit import register_app
pod, name, *cmd = sys.argv[1:]
pid = os.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
register_app(Path(pod), pid, name)
print(f"spawned (pid: {pid})", flush=True)
"""


# The launcher's start path, as PID 1 of the new namespace: fork and register each app of a JSON
# list of {"name", "argv", "log_fd" (optional), "wait" (optional)}, then exec podinit (the rest
# of argv, POD_DIR last) with signals blocked. An app's stdout and stderr go to a pipe whose
# read end is fd `log_fd` for podinit's `-f log_fd:NAME` (apps naming one fd share the pipe).
# "wait": the app ends before the exec; a zombie whose SIGCHLD was discarded (not blocked).
LAUNCH = r"""
import json, os, signal, sys
from pathlib import Path
from kurma.runtime._podinit import register_app
apps, *argv = sys.argv[1:]
Path(argv[-1], "pids").mkdir(exist_ok=True)
pipes = {}
for app in json.loads(apps):
    if app.get("log_fd") is not None and app["log_fd"] not in pipes:
        r, pipes[app["log_fd"]] = os.pipe()
        os.dup2(r, app["log_fd"])
        os.close(r)
    pid = os.fork()
    if pid == 0:
        if app.get("log_fd") is not None:
            os.dup2(pipes[app["log_fd"]], 1)
            os.dup2(pipes[app["log_fd"]], 2)
        os.execvp(app["argv"][0], app["argv"])
    register_app(Path(argv[-1]), pid, app["name"])
    if app.get("wait"):
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # a zombie now, not reaped
for w in pipes.values():
    os.close(w)
assert signal.SIGCHLD not in signal.sigpending()
signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
os.execv(argv[0], argv)
"""


def launch(apps: list[dict[str, object]]) -> tuple[str, ...]:
    """`launcher=` for running_pod: start `apps` (see LAUNCH) before podinit."""
    return (sys.executable, "-c", LAUNCH, json.dumps(apps))


class Lines:
    """Lines read from a pipe with a deadline, never blocking past it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def next(self, timeout: float = DEADLINE) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError(f"no line within {timeout}s (have {self.buf!r})")
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise EOFError(f"pipe closed (have {self.buf!r})")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line + b"\n"


@dataclass
class App:
    ns_pid: int
    host_pid: int
    out: Lines


@dataclass
class Pod:
    dir: Path
    unshare: subprocess.Popen[bytes]
    pid: int  # podinit's pid on the host
    notes: Lines | None
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def sh(self, script: str) -> subprocess.CompletedProcess[str]:
        """Run `sh -c script` inside the pod's PID and mount namespaces."""
        return subprocess.run(
            [*self._nsenter(), "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=True,
        )

    def start_app(self, *args: str, name: str = "app") -> App:
        """Start the helper app as a registered orphan of podinit; waits for its ready line."""
        proc = subprocess.Popen(
            [
                *self._nsenter(),
                sys.executable,
                "-c",
                SPAWN,
                str(self.dir),
                name,
                sys.executable,
                "-c",
                APP,
                *args,
            ],
            stdout=subprocess.PIPE,
        )
        self._procs.append(proc)
        out = Lines(proc.stdout.fileno())  # type: ignore[union-attr]
        ns_pid = int(out.next().split(b"pid: ")[1].rstrip(b")\n"))
        assert out.next() == f"ready (pid: {ns_pid})\n".encode()
        host_pid = wait_for(
            lambda: self.child_with_ns_pid(ns_pid), f"app {ns_pid} adopted", DEADLINE
        )
        return App(ns_pid, int(host_pid), out)  # type: ignore[arg-type]

    def child_with_ns_pid(self, ns_pid: int) -> int | None:
        """Host pid of podinit's child whose in-pod pid is `ns_pid`, if it is one."""
        for pid in children(self.pid):
            with suppress(FileNotFoundError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("NSpid:") and line.split()[-1] == str(ns_pid):
                        return pid
        return None

    def ns_processes(self) -> dict[int, str]:
        """In-pod pid -> state letter, read from the pod's own /proc."""
        states = {}
        proc = Path(f"/proc/{self.pid}/root/proc")
        for entry in proc.iterdir():
            if entry.name.isdigit():
                with suppress(FileNotFoundError, ProcessLookupError):
                    stat = (entry / "stat").read_text()
                    states[int(entry.name)] = stat.rsplit(")", 1)[1].split()[0]
        return states

    def wait_record(self, ns_pid: int) -> int:
        """Wait until podinit recorded `ns_pid`'s exit; returns the code."""
        wait_for(
            lambda: ns_pid in read_exit_records(self.dir), f"exit record of {ns_pid}", DEADLINE
        )
        return read_exit_records(self.dir)[ns_pid]

    def alive(self) -> bool:
        return self.unshare.poll() is None and Path(f"/proc/{self.pid}").exists()

    def _nsenter(self) -> list[str]:
        return ["nsenter", f"--target={self.pid}", "--pid", "--mount", "--"]


def children(pid: int) -> list[int]:
    with suppress(FileNotFoundError, ProcessLookupError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


@pytest.fixture(scope="module")
def binary() -> Path:
    return build_podinit()


@contextmanager
def running_pod(
    binary: Path,
    tmp_path: Path,
    *args: str,
    notify: bool = True,
    cmd: tuple[str, ...] = (),
    existing: bool = False,
    launcher: tuple[str, ...] = (),
    pass_fds: tuple[int, ...] = (),
) -> Iterator[Pod]:
    """Start podinit as PID 1 of a new PID (and mount) namespace; SIGKILL it on the way out.

    `launcher` runs first as that PID 1 and execs podinit's argv (see `launch()`); `pass_fds`
    are inherited by it and podinit.
    """
    pod_dir = tmp_path / "pod"
    if not existing:
        pod_dir.mkdir()
    r, w = os.pipe() if notify else (-1, -1)
    # fd 9 stands for an fd the launcher forgot to close: podinit must close it.
    redirect = f'exec "$@" 3>&{w} {w}>&- 9</dev/null' if notify else 'exec "$@" 3>&-'
    argv = ["unshare", "--pid", "--kill-child", "--mount-proc", "--", *launcher, str(binary)]
    argv += [*args, str(pod_dir)]
    if cmd:
        argv += ["--", *cmd]
    unshare = subprocess.Popen(  # bash: dash takes single-digit fds only
        ["bash", "-c", redirect, "bash", *argv], pass_fds=(w, *pass_fds) if notify else pass_fds
    )
    pod = None
    try:
        if notify:
            os.close(w)
        pid = wait_for(lambda: children(unshare.pid), "podinit to start", DEADLINE)[0]  # type: ignore[index]
        pod = Pod(pod_dir, unshare, pid, Lines(r) if notify else None)
        if pod.notes:
            assert pod.notes.next() == b"ready\n"
        else:
            wait_for(
                lambda: read_cmdline(pid).startswith("kurma-podinit "), "podinit ready", DEADLINE
            )
        print(f"ready (pid: {pid})")
        yield pod
    finally:
        if pod is not None:
            with suppress(ProcessLookupError):
                os.kill(pod.pid, signal.SIGKILL)
            for proc in pod._procs:
                proc.kill()
                proc.wait(DEADLINE)
                if proc.stdout:
                    proc.stdout.close()
        unshare.kill()
        unshare.wait(DEADLINE)
        if notify and (pod is None or pod.notes is not None):
            os.close(r)


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def read_cmdline(pid: int) -> str:
    with suppress(FileNotFoundError, ProcessLookupError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    return ""


# ---- pure helpers (no root needed) ----


def test_parse_notification() -> None:
    """The two line kinds parse; anything else is a ValueError."""
    assert parse_notification(b"ready\n") == Notification(Event.READY)
    assert parse_notification(b"exit 42 143\n") == Notification(Event.EXIT, 42, 143)
    for bad in (b"exit 42\n", b"exit x 1\n", b"hello\n", b""):
        with pytest.raises(ValueError):
            parse_notification(bad)


def test_read_exit_records_skips_temporaries(tmp_path: Path) -> None:
    """Records are `exits/<pid>` holding the code; temp files and strays are skipped."""
    assert read_exit_records(tmp_path) == {}
    (tmp_path / "exits").mkdir()
    (tmp_path / "exits" / "7").write_text("143\n")
    (tmp_path / "exits" / ".8.tmp").write_text("1\n")
    (tmp_path / "exits" / "9").write_text("garbage")
    assert read_exit_records(tmp_path) == {7: 143}


def test_missing_binary_names_build_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """podinit_path() tells how to build the binary when it is absent."""
    monkeypatch.setattr(_podinit, "BINARY", Path("/nonexistent/kurma-podinit"))
    with pytest.raises(FileNotFoundError, match="make -C"):
        _podinit.podinit_path()


def test_podinit_argv_reaper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`reaper=` is `-r CGROUP_PROCS`, before POD_DIR; an empty or directory path is refused."""
    monkeypatch.setattr(_podinit, "podinit_path", lambda: Path("/opt/kurma-podinit"))
    procs = "/sys/fs/cgroup/pids/k/pod-1/cgroup.procs"
    argv = _podinit.podinit_argv(tmp_path, grace=1.0, reaper=procs)
    assert argv == ["/opt/kurma-podinit", "-g", "1.0", "-r", procs, str(tmp_path)]
    for bad in ("", "/sys/fs/cgroup/pids/k/"):
        with pytest.raises(ValueError):
            _podinit.podinit_argv(tmp_path, reaper=bad)


@pytest.mark.parametrize(("script", "code"), [("exit 3", 3), ("kill -KILL $$", 137)])
def test_wait_and_record(tmp_path: Path, script: str, code: int) -> None:
    """wait_and_record() writes exits/<pid> as podinit does, drops pids/<pid>, reaps."""
    for sub in ("pids", "exits"):
        (tmp_path / sub).mkdir()
    child = subprocess.Popen(["sh", "-c", script])
    _podinit.register_app(tmp_path, child.pid, "handler")
    assert _podinit.wait_and_record(tmp_path, child.pid) == code
    assert read_exit_records(tmp_path) == {child.pid: code}
    assert sorted(p.name for p in (tmp_path / "exits").iterdir()) == [str(child.pid)]
    assert list((tmp_path / "pids").iterdir()) == []
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)  # reaped
    child.returncode = code  # keep Popen from waiting for it again


# ---- the real binary ----


@pytest.mark.root
@pytest.mark.parametrize("code", [0, 1, 255])
def test_exit_code_recorded_and_notified(binary: Path, tmp_path: Path, code: int) -> None:
    """An app's exit code lands in exits/<pid>, its registration goes, fd 3 says so."""
    with running_pod(binary, tmp_path) as pod:
        app = pod.start_app("--exit-on-usr1", str(code))
        assert (pod.dir / "pids" / str(app.ns_pid)).exists()
        os.kill(app.host_pid, signal.SIGUSR1)
        assert pod.wait_record(app.ns_pid) == code
        assert pod.notes and pod.notes.next() == f"exit {app.ns_pid} {code}\n".encode()
        assert not (pod.dir / "pids" / str(app.ns_pid)).exists()
        assert pod.alive()


@pytest.mark.root
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_death_by_signal_recorded(binary: Path, tmp_path: Path, sig: signal.Signals) -> None:
    """An app killed by signal N is recorded as 128+N."""
    with running_pod(binary, tmp_path) as pod:
        app = pod.start_app()
        os.kill(app.host_pid, sig)
        assert pod.wait_record(app.ns_pid) == 128 + sig
        assert pod.notes and parse_notification(pod.notes.next()) == Notification(
            Event.EXIT, app.ns_pid, 128 + sig
        )


@pytest.mark.root
def test_initial_command(binary: Path, tmp_path: Path) -> None:
    """`-- CMD` runs a first app as podinit's child, registered; podinit outlives it."""
    with running_pod(binary, tmp_path, cmd=("sh", "-c", "exit 3")) as pod:
        assert pod.notes and pod.notes.next() == b"exit 2 3\n"
        assert read_exit_records(pod.dir) == {2: 3}
        assert pod.alive()


@pytest.mark.root
def test_thousand_orphans_reaped(binary: Path, tmp_path: Path) -> None:
    """1000 unregistered orphans (and grand-orphans) are reaped: no zombie, no record."""
    with running_pod(binary, tmp_path) as pod:
        pod.sh("i=0; while [ $i -lt 500 ]; do (exit 1) & ( (exit 2) & ) ; i=$((i+1)); done")
        wait_for(lambda: list(pod.ns_processes()) == [1], "every orphan to be reaped", DEADLINE)
        assert pod.ns_processes() == {1: "S"}
        assert read_exit_records(pod.dir) == {}
        assert pod.alive()


@pytest.mark.root
def test_sigterm_stops_pod_within_grace(binary: Path, tmp_path: Path) -> None:
    """SIGTERM to podinit: every app gets SIGTERM, podinit exits 0 once they are gone."""
    with running_pod(binary, tmp_path, "-g", "30") as pod:
        apps = [pod.start_app(name=f"a{i}") for i in range(2)]
        start = time.monotonic()
        os.kill(pod.pid, signal.SIGTERM)
        assert pod.unshare.wait(DEADLINE) == 0
        assert time.monotonic() - start < 5, "podinit waited for the grace period"
        assert read_exit_records(pod.dir) == {a.ns_pid: 143 for a in apps}
        assert pod.notes
        lines = {pod.notes.next(), pod.notes.next()}
        assert lines == {f"exit {a.ns_pid} 143\n".encode() for a in apps}


@pytest.mark.root
def test_sigkill_after_grace(binary: Path, tmp_path: Path) -> None:
    """An app ignoring SIGTERM is SIGKILLed when the grace (-g 1) ends; podinit exits 0."""
    with running_pod(binary, tmp_path, "-g", "1") as pod:
        stubborn = pod.start_app("--ignore-term")
        polite = pod.start_app()
        start = time.monotonic()
        os.kill(pod.pid, signal.SIGTERM)
        assert stubborn.out.next() == b"signal 15\n"
        assert pod.unshare.wait(DEADLINE) == 0
        elapsed = time.monotonic() - start
        assert 1.0 <= elapsed < 4.0, elapsed
        assert read_exit_records(pod.dir) == {stubborn.ns_pid: 137, polite.ns_pid: 143}


@pytest.mark.root
def test_second_sigterm_kills_at_once(binary: Path, tmp_path: Path) -> None:
    """A second SIGTERM during the grace period ends it: SIGKILL now, podinit exits 0."""
    with running_pod(binary, tmp_path, "-g", "60") as pod:
        stubborn = pod.start_app("--ignore-term")
        os.kill(pod.pid, signal.SIGTERM)
        assert stubborn.out.next() == b"signal 15\n"
        os.kill(pod.pid, signal.SIGTERM)
        assert pod.unshare.wait(DEADLINE) == 0
        assert read_exit_records(pod.dir) == {stubborn.ns_pid: 137}


@pytest.mark.root
def test_stopped_app_sees_sigterm(binary: Path, tmp_path: Path) -> None:
    """A stopped app is sent SIGCONT after SIGTERM, so it handles SIGTERM within the grace."""
    with running_pod(binary, tmp_path, "-g", "60") as pod:
        stubborn = pod.start_app("--ignore-term")
        os.kill(stubborn.host_pid, signal.SIGSTOP)
        wait_for(lambda: proc_state(stubborn.host_pid) == "T", "app to stop", DEADLINE)
        os.kill(pod.pid, signal.SIGTERM)
        assert stubborn.out.next() == b"signal 15\n"


@pytest.mark.root
def test_registrations_kept_at_start(binary: Path, tmp_path: Path) -> None:
    """podinit keeps what is in POD_DIR/pids at start: the launcher registered those apps."""
    (tmp_path / "pod" / "pids").mkdir(parents=True)
    (tmp_path / "pod" / "pids" / "99").write_text("old\n")
    with running_pod(binary, tmp_path, existing=True) as pod:
        assert sorted(p.name for p in (pod.dir / "pids").iterdir()) == ["99"]


@pytest.mark.root
def test_apps_forked_before_exec(binary: Path, tmp_path: Path) -> None:
    """Apps forked and registered by PID 1 before it execs podinit are podinit's: one that ended
    before the exec (zombie, SIGCHLD lost) is recorded at start, a live one when it ends."""
    apps = [
        {"name": "early", "argv": ["sh", "-c", "exit 7"], "wait": True},
        {"name": "late", "argv": ["sleep", "600"]},
    ]
    with running_pod(binary, tmp_path, launcher=launch(apps)) as pod:
        assert pod.notes and pod.notes.next() == b"exit 2 7\n"
        assert read_exit_records(pod.dir) == {2: 7}
        assert sorted(p.name for p in (pod.dir / "pids").iterdir()) == ["3"]
        late = wait_for(lambda: pod.child_with_ns_pid(3), "the live app", DEADLINE)
        os.kill(late, signal.SIGTERM)  # type: ignore[arg-type]
        assert pod.wait_record(3) == 143
        assert pod.notes.next() == b"exit 3 143\n"
        assert pod.ns_processes() == {1: "S"}
        assert pod.alive()


@pytest.mark.root
def test_terminate_apps_signal(binary: Path, tmp_path: Path) -> None:
    """Signal 63 from outside: SIGTERM (+SIGCONT) to every app, podinit stays and records."""
    with running_pod(binary, tmp_path, "-g", "60") as pod:
        stubborn = pod.start_app("--ignore-term", "--exit-on-usr1", "5")
        polite = pod.start_app()
        stopped = pod.start_app()
        os.kill(stopped.host_pid, signal.SIGSTOP)
        wait_for(lambda: proc_state(stopped.host_pid) == "T", "app to stop", DEADLINE)
        os.kill(pod.pid, SIGNAL_TERMINATE_APPS)
        assert stubborn.out.next() == b"signal 15\n"
        assert pod.wait_record(polite.ns_pid) == 143
        assert pod.wait_record(stopped.ns_pid) == 143
        assert pod.alive()
        os.kill(stubborn.host_pid, signal.SIGUSR1)
        assert pod.wait_record(stubborn.ns_pid) == 5
        later = pod.start_app()  # the namespaces live on: post-stop hooks can run
        os.kill(later.host_pid, signal.SIGKILL)
        assert pod.wait_record(later.ns_pid) == 137
        os.kill(pod.pid, signal.SIGTERM)
        assert pod.unshare.wait(DEADLINE) == 0


@pytest.mark.root
def test_kill_apps_signal(binary: Path, tmp_path: Path) -> None:
    """Signal 64 from outside: SIGKILL to every app (recorded 137), podinit stays."""
    with running_pod(binary, tmp_path, "-g", "60") as pod:
        apps = [pod.start_app("--ignore-term"), pod.start_app()]
        os.kill(pod.pid, SIGNAL_KILL_APPS)
        assert {pod.wait_record(a.ns_pid) for a in apps} == {137}
        wait_for(lambda: list(pod.ns_processes()) == [1], "every app to be reaped", DEADLINE)
        assert pod.alive()
        assert pod.sh("echo hook").stdout == "hook\n"
        os.kill(pod.pid, signal.SIGTERM)
        assert pod.unshare.wait(DEADLINE) == 0


@pytest.mark.root
def test_grace_from_environment(binary: Path, tmp_path: Path, monkeypatch) -> None:
    """KURMA_PODINIT_GRACE sets the grace when -g is not given."""
    monkeypatch.setenv("KURMA_PODINIT_GRACE", "0.3")
    with running_pod(binary, tmp_path) as pod:
        stubborn = pod.start_app("--ignore-term")
        start = time.monotonic()
        os.kill(pod.pid, signal.SIGTERM)
        assert pod.unshare.wait(DEADLINE) == 0
        assert time.monotonic() - start < 3.0
        assert read_exit_records(pod.dir) == {stubborn.ns_pid: 137}


@pytest.mark.root
def test_apps_cannot_signal_podinit(binary: Path, tmp_path: Path) -> None:
    """kill -9/-TERM/-INT/-USR1/-63/-64 1 from inside the pod do nothing (not forwarded)."""
    with running_pod(binary, tmp_path) as pod:
        app = pod.start_app()
        pod.sh("kill -9 1; kill -TERM 1; kill -INT 1; kill -USR1 1; kill -63 1; kill -64 1")
        assert pod.alive()
        os.kill(pod.pid, signal.SIGUSR2)  # from outside: forwarded, and after the above
        assert app.out.next() == f"signal {signal.SIGUSR2.value}\n".encode()
        assert pod.alive()
        assert read_exit_records(pod.dir) == {}


@pytest.mark.root
def test_outside_signals_forwarded_to_apps(binary: Path, tmp_path: Path) -> None:
    """SIGHUP/SIGINT/SIGUSR1 sent to podinit from outside reach every registered app."""
    with running_pod(binary, tmp_path) as pod:
        apps = [pod.start_app(name=f"a{i}") for i in range(2)]
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGUSR1):
            os.kill(pod.pid, sig)
            for app in apps:
                assert app.out.next() == f"signal {sig.value}\n".encode()
        assert pod.alive()


@pytest.mark.root
def test_records_survive_without_reader(binary: Path, tmp_path: Path) -> None:
    """With fd 3's reader gone, podinit lives on (no SIGPIPE death) and still writes records."""
    with running_pod(binary, tmp_path) as pod:
        first, second = pod.start_app(), pod.start_app()
        assert pod.notes
        os.close(pod.notes.fd)
        pod.notes = None
        os.kill(first.host_pid, signal.SIGKILL)
        assert pod.wait_record(first.ns_pid) == 137
        os.kill(second.host_pid, signal.SIGTERM)
        assert pod.wait_record(second.ns_pid) == 143
        assert pod.alive()


@pytest.mark.root
def test_without_fd3(binary: Path, tmp_path: Path) -> None:
    """fd 3 is optional: without it podinit runs and records exits all the same."""
    with running_pod(binary, tmp_path, notify=False) as pod:
        app = pod.start_app()
        os.kill(app.host_pid, signal.SIGTERM)
        assert pod.wait_record(app.ns_pid) == 143


@pytest.mark.root
def test_title_and_fds(binary: Path, tmp_path: Path) -> None:
    """ps shows `kurma-podinit <pod>`; inherited fds past 3 are closed, leaving 0-3, the two
    dirs and the signalfd."""
    with running_pod(binary, tmp_path) as pod:
        cmdline = Path(f"/proc/{pod.pid}/cmdline").read_bytes()
        assert cmdline.split(b"\0")[0] == b"kurma-podinit pod"
        assert Path(f"/proc/{pod.pid}/comm").read_text() == "kurma-podinit\n"
        fds = {
            int(fd): os.readlink(f"/proc/{pod.pid}/fd/{fd}")
            for fd in os.listdir(f"/proc/{pod.pid}/fd")
        }
        assert {0, 1, 2, 3} <= set(fds)
        assert sorted(v for k, v in fds.items() if k > 3) == [
            str(pod.dir / "exits"),
            str(pod.dir / "pids"),
            "anon_inode:[signalfd]",
        ]


@pytest.mark.root
def test_pss_is_tiny(binary: Path, tmp_path: Path) -> None:
    """podinit's proportional set size stays far below 512 KiB."""
    with running_pod(binary, tmp_path) as pod:
        rollup = Path(f"/proc/{pod.pid}/smaps_rollup").read_text()
        sizes = {
            k: int(v.split()[0])
            for k, v in (line.split(":", 1) for line in rollup.splitlines()[1:])
        }
        print(
            f"kurma-podinit: Rss {sizes['Rss']} KiB, Pss {sizes['Pss']} KiB, "
            f"binary {binary.stat().st_size} bytes"
        )
        assert sizes["Pss"] < 512


@pytest.mark.root
def test_refuses_to_run_outside_a_pid_namespace(binary: Path, tmp_path: Path) -> None:
    """Not PID 1: podinit exits 2 at once (its kill(-1) would hit the whole machine)."""
    proc = subprocess.run(
        [str(binary), str(tmp_path)], capture_output=True, text=True, timeout=DEADLINE, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr == "podinit: must be PID 1 of a new PID namespace\n"


@pytest.mark.root
@pytest.mark.parametrize("args", [[], ["-g", "soon", "/tmp"], ["/tmp", "extra"], ["/tmp", "--"]])
def test_bad_arguments(binary: Path, args: list[str]) -> None:
    """Usage errors exit 2 with a `podinit: ` line."""
    proc = subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=DEADLINE, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("podinit: ")


@pytest.mark.root
def test_unusable_pod_dir(binary: Path, tmp_path: Path) -> None:
    """A POD_DIR that cannot be opened is an error with errno text."""
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", "--", str(binary), str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"podinit: cannot open {tmp_path}/missing: No such file or directory\n"


# ---- reaper mode (-r CGROUP_PROCS): a pod in the host's PID namespace ----
#
# podinit runs as an ordinary host process in a cgroup of its own (every hierarchy), exec'd
# by LAUNCH after it forked the apps; pids are host pids. "The pod" is that cgroup.


@dataclass
class ReaperPod:
    dir: Path
    proc: subprocess.Popen[bytes]  # podinit itself (bash, then LAUNCH, exec'd it)
    notes: Lines
    cgroup: Cgroup
    procs: str  # the -r argument

    @property
    def pid(self) -> int:
        return self.proc.pid

    def join(
        self, *argv: str, cgroup: Cgroup | None = None, becomes: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Run argv in the pod's cgroup (or `cgroup`) but as the test's child, not podinit's:
        like a post-stop handler, or a process the cgroup holds whose parent is outside.
        With `becomes`, wait until it is listed in the file podinit reads and has exec'd
        that program."""
        target = cgroup or self.cgroup
        join = " ".join(f"echo $$ > {f};" for f in procs_files(target))
        proc = subprocess.Popen(["sh", "-c", f'{join} exec "$@"', "sh", *argv])
        listed = reaper_procs(target)
        assert listed is not None
        if becomes is not None:
            wait_for(
                lambda: (
                    str(proc.pid) in Path(listed).read_text().split()
                    and read_cmdline(proc.pid) == becomes
                ),
                f"{becomes} in the cgroup",
                DEADLINE,
            )
        return proc

    def others(self) -> set[int]:
        """The cgroup's processes but podinit."""
        return self.cgroup.pids() - {self.pid}


@contextmanager
def reaper_pod(
    binary: Path, tmp_path: Path, *args: str, apps: list[dict[str, object]] | None = None
) -> Iterator[ReaperPod]:
    """podinit -r in a fresh cgroup with `apps` (see LAUNCH) forked before it; on the way out
    podinit is SIGKILLed and the cgroup killed and removed (podinit's death ends nothing)."""
    cgroup = CgroupSystem.detect().create(f"kurma-podinit-{os.urandom(4).hex()}")
    procs = reaper_procs(cgroup)
    assert procs is not None
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    r, w = os.pipe()
    join = " ".join(f"echo $$ > {f};" for f in procs_files(cgroup))
    argv = [*launch(apps or []), str(binary), "-r", procs, *args, str(pod_dir)]
    proc = subprocess.Popen(
        ["bash", "-c", f'{join} exec "$@" 3>&{w} {w}>&- 9</dev/null', "bash", *argv],
        pass_fds=(w,),
    )
    os.close(w)
    try:
        pod = ReaperPod(pod_dir, proc, Lines(r), cgroup, procs)
        assert pod.notes.next() == b"ready\n"
        yield pod
    finally:
        with suppress(ProcessLookupError):
            proc.kill()
        proc.wait(DEADLINE)
        cgroup.kill_all()
        cgroup.remove()
        os.close(r)


def host_alive(pid: int) -> bool:
    with suppress(FileNotFoundError, ProcessLookupError):
        return proc_state(pid) != "Z"
    return False


@pytest.mark.root
def test_reaper_records_host_pids(binary: Path, tmp_path: Path) -> None:
    """-r: podinit is not PID 1, is a child subreaper, and records its apps under host pids."""
    apps = [
        {"name": "early", "argv": ["sh", "-c", "exit 7"], "wait": True},
        {"name": "late", "argv": ["sleep", "600"]},
    ]
    with reaper_pod(binary, tmp_path, apps=apps) as pod:
        assert pod.pid != 1 and read_cmdline(pod.pid) == "kurma-podinit pod"
        status = Path(f"/proc/{pod.pid}/status").read_text()
        assert f"NSpid:\t{pod.pid}\n" in status  # the host's PID namespace
        note = parse_notification(pod.notes.next())
        early = note.pid
        assert (note.event, note.code) == (Event.EXIT, 7)
        assert read_exit_records(pod.dir) == {early: 7}
        (late,) = children(pod.pid)
        assert sorted(p.name for p in (pod.dir / "pids").iterdir()) == [str(late)]
        os.kill(late, signal.SIGTERM)
        assert pod.notes.next() == f"exit {late} 143\n".encode()
        assert read_exit_records(pod.dir) == {early: 7, late: 143}
        assert pod.proc.poll() is None


@pytest.mark.root
def test_reaper_adopts_orphans(binary: Path, tmp_path: Path) -> None:
    """An app's orphan is re-parented to podinit (a subreaper), reaped without a record."""
    orphan_file, go = tmp_path / "orphan", tmp_path / "go"
    script = f"sleep 600 & echo $! > {orphan_file}; while [ ! -e {go} ]; do sleep 0.02; done"
    with reaper_pod(
        binary, tmp_path, apps=[{"name": "parent", "argv": ["sh", "-c", script]}]
    ) as pod:
        go.touch()  # podinit is up: the parent may exit now
        (parent,) = wait_for(lambda: list(read_exit_records(pod.dir)), "the parent's end", DEADLINE)  # type: ignore[misc]
        orphan = int(orphan_file.read_text())
        wait_for(lambda: children(pod.pid) == [orphan], "the orphan's re-parenting", DEADLINE)
        os.kill(orphan, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{orphan}").exists(), "the orphan to be reaped", DEADLINE)
        assert read_exit_records(pod.dir) == {parent: 0}
        assert pod.proc.poll() is None


@pytest.mark.root
def test_reaper_sigterm_stops_the_cgroup_only(binary: Path, tmp_path: Path) -> None:
    """SIGTERM: every process of the cgroup (also one whose parent is outside) gets SIGTERM,
    one ignoring it SIGKILL after the grace; a host process outside the cgroup is untouched."""
    apps = [
        {"name": "polite", "argv": ["sleep", "600"]},
        {"name": "stubborn", "argv": ["sh", "-c", "trap '' TERM; sleep 600; exit 9"]},
    ]
    outside = subprocess.Popen(["sleep", "600"])
    try:
        with reaper_pod(binary, tmp_path, "-g", "1", apps=apps) as pod:
            polite, stubborn = sorted(int(p.name) for p in (pod.dir / "pids").iterdir())
            joined = pod.join("sleep", "600", becomes="sleep")
            start = time.monotonic()
            os.kill(pod.pid, signal.SIGTERM)
            assert pod.proc.wait(DEADLINE) == 0
            elapsed = time.monotonic() - start
            assert 1.0 <= elapsed < 4.0, elapsed
            assert joined.wait(DEADLINE) == -signal.SIGTERM
            assert pod.others() == set()
            assert read_exit_records(pod.dir) == {polite: 143, stubborn: 137}
        assert outside.poll() is None
    finally:
        outside.kill()
        outside.wait()


@pytest.mark.root
def test_reaper_sigterm_ends_at_once_when_outsiders_exit(binary: Path, tmp_path: Path) -> None:
    """Processes whose parent is outside send podinit no SIGCHLD: it looks at the cgroup
    anyway, so the stop does not wait for the whole grace."""
    with reaper_pod(binary, tmp_path, "-g", "30") as pod:
        joined = pod.join("sleep", "600", becomes="sleep")
        start = time.monotonic()
        os.kill(pod.pid, signal.SIGTERM)
        assert pod.proc.wait(DEADLINE) == 0
        assert time.monotonic() - start < 2.0
        assert joined.wait(DEADLINE) == -signal.SIGTERM


@pytest.mark.root
def test_reaper_terminate_and_kill_apps(binary: Path, tmp_path: Path) -> None:
    """63: SIGTERM+SIGCONT to the cgroup; 64: SIGKILL, also in child cgroups; podinit stays."""
    apps = [
        {"name": "stubborn", "argv": ["sh", "-c", "trap '' TERM; sleep 600"]},
        {"name": "stopped", "argv": ["sleep", "600"]},
    ]
    with reaper_pod(binary, tmp_path, "-g", "60", apps=apps) as pod:
        stubborn, stopped = sorted(int(p.name) for p in (pod.dir / "pids").iterdir())
        os.kill(stopped, signal.SIGSTOP)
        wait_for(lambda: proc_state(stopped) == "T", "app to stop", DEADLINE)
        child = pod.cgroup.child("app-deep")
        deep = pod.join("sh", "-c", "trap '' TERM; exec sleep 600", cgroup=child, becomes="sleep")
        os.kill(pod.pid, SIGNAL_TERMINATE_APPS)
        assert pod.notes.next() == f"exit {stopped} 143\n".encode()
        time.sleep(0.2)
        assert host_alive(stubborn) and deep.poll() is None
        os.kill(pod.pid, SIGNAL_KILL_APPS)
        assert pod.notes.next() == f"exit {stubborn} 137\n".encode()
        assert deep.wait(DEADLINE) == -signal.SIGKILL
        wait_for(lambda: pod.others() == set(), "the cgroup to empty", DEADLINE)
        assert pod.proc.poll() is None
        os.kill(pod.pid, signal.SIGTERM)
        assert pod.proc.wait(DEADLINE) == 0


@pytest.mark.root
def test_reaper_kill_catches_forks_racing_it(binary: Path, tmp_path: Path) -> None:
    """One signal 64 leaves nothing although an app forks as fast as it can meanwhile."""
    forker = "trap '' TERM; while :; do sleep 600 & done"
    with reaper_pod(
        binary, tmp_path, "-g", "60", apps=[{"name": "f", "argv": ["sh", "-c", forker]}]
    ) as pod:
        wait_for(lambda: len(pod.others()) > 50, "the forks", DEADLINE)
        os.kill(pod.pid, SIGNAL_KILL_APPS)
        wait_for(lambda: pod.others() == set(), "the cgroup to empty", 5.0)
        time.sleep(0.3)
        assert pod.others() == set()
        rollup = Path(f"/proc/{pod.pid}/smaps_rollup").read_text()
        pss = int(next(line for line in rollup.splitlines() if line.startswith("Pss:")).split()[1])
        assert pss < 512, f"{pss} KiB: the signalled-pids bitmap was not given back"


@pytest.mark.root
@pytest.mark.parametrize("then", ["sleep 0.5", "exit 0"], ids=["sender-alive", "sender-gone"])
def test_reaper_ignores_signals_from_the_pod(binary: Path, tmp_path: Path, then: str) -> None:
    """A sender in the cgroup cannot stop podinit or have signals forwarded, also when it has
    exited before podinit looks at it (it is then listed nowhere)."""
    with reaper_pod(
        binary, tmp_path, "-g", "60", apps=[{"name": "a", "argv": ["sleep", "600"]}]
    ) as pod:
        (app,) = (int(p.name) for p in (pod.dir / "pids").iterdir())
        kills = (f"kill -{sig} {pod.pid}" for sig in ("TERM", "63", "64", "INT"))
        rebel = pod.join("sh", "-c", "; ".join([*kills, then]))
        assert rebel.wait(DEADLINE) == 0
        time.sleep(0.3)
        assert pod.proc.poll() is None and host_alive(app)
        os.kill(pod.pid, signal.SIGINT)  # from outside: forwarded to the registered app
        assert pod.notes.next() == f"exit {app} {128 + signal.SIGINT}\n".encode()


@pytest.mark.root
def test_reaper_fds(binary: Path, tmp_path: Path) -> None:
    """-r keeps one more fd: the cgroup's directory."""
    with reaper_pod(binary, tmp_path) as pod:
        fds = {
            int(fd): os.readlink(f"/proc/{pod.pid}/fd/{fd}")
            for fd in os.listdir(f"/proc/{pod.pid}/fd")
        }
        assert sorted(v for k, v in fds.items() if k > 3) == sorted(
            [
                str(pod.dir / "exits"),
                str(pod.dir / "pids"),
                os.path.dirname(pod.procs),
                "anon_inode:[signalfd]",
            ]
        )


@pytest.mark.root
def test_reaper_refuses_a_cgroup_it_is_not_in(binary: Path, tmp_path: Path) -> None:
    """-r naming a cgroup podinit is not listed in (a parent's, the root's) is exit 2, as is
    an unreadable one."""
    cgroup = CgroupSystem.detect().create(f"kurma-podinit-{os.urandom(4).hex()}")
    try:
        procs = reaper_procs(cgroup)
        assert procs is not None
        for path, error in [
            (procs, f"podinit: -r: podinit is not in the cgroup of {procs}\n"),
            (str(tmp_path / "none"), f"podinit: -r: cannot read {tmp_path}/none: "),
        ]:
            proc = subprocess.run(
                [str(binary), "-r", path, str(tmp_path)],
                capture_output=True,
                text=True,
                timeout=DEADLINE,
                check=False,
            )
            assert proc.returncode == 2
            assert proc.stderr.startswith(error), proc.stderr
    finally:
        cgroup.remove()
