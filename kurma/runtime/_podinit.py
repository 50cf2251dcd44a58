"""kurma-podinit, the C program that is PID 1 of every pod: find or build it, read what it writes.

The protocol (registration in `POD_DIR/pids/`, records in `POD_DIR/exits/`, lines on fd 3,
logs in `POD_DIR/logs/`, signals, reaper mode `-r` for pods in the host's PID namespace) is
described in `kurma/runtime/podinit/README.md`. The records are the truth; the fd 3 lines are
hints that may be lost when the reader is slow or gone. `wait_and_record` writes a record the
way podinit does, for a process podinit cannot reap (a handler of a host-PID pod).
"""

from __future__ import annotations

import contextlib
import enum
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_atomic

SOURCE_DIR = Path(__file__).parent / "podinit"
BINARY = SOURCE_DIR / "kurma-podinit"
BUILD_COMMAND = f"make -C {SOURCE_DIR}"

# Sent to podinit from outside the pod: stop the apps but keep the pod's namespaces (for
# post-stop hooks); podinit keeps reaping and recording. Kernel numbers (SIGRTMAX-1, SIGRTMAX),
# the same whatever libc the sender uses.
SIGNAL_TERMINATE_APPS = 63  # SIGTERM then SIGCONT to every process of the pod but podinit
SIGNAL_KILL_APPS = 64  # SIGKILL to every process of the pod but podinit

LOGS_DIR = "logs"  # POD_DIR/logs/NAME.log, rotated to NAME.log.1 .. NAME.log.KEEP
LOG_MAX_STREAMS = 64  # -f at most this many times
LOG_NAME_MAX = 248  # -f NAME: at most this long (NAME.log.99 fits in a file name)
LOG_MIN_BYTES, LOG_MAX_BYTES = 4096, 1 << 50  # -l MAXBYTES bounds
LOG_MAX_KEEP = 99  # -l KEEP at most
DEFAULT_ROTATE = (10 * 1024 * 1024, 3)  # -l MAXBYTES:KEEP when not given


def podinit_path() -> Path:
    """The built kurma-podinit; FileNotFoundError naming the build command if it is missing."""
    if not os.access(BINARY, os.X_OK):
        raise FileNotFoundError(
            f"kurma-podinit is not built: run `{BUILD_COMMAND}` (part of `make deps`)"
        )
    return BINARY


def build_podinit() -> Path:
    """Build kurma-podinit with its Makefile (a no-op when it is up to date); returns its path."""
    proc = subprocess.run(
        ["make", "-s", "-C", str(SOURCE_DIR)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"`{BUILD_COMMAND}` failed:\n{proc.stdout}{proc.stderr}")
    return podinit_path()


def podinit_argv(
    pod_dir: Path,
    *,
    grace: float | None = None,
    logs: Sequence[tuple[int, str]] = (),
    rotate: tuple[int, int] | None = None,
    reaper: str | None = None,
) -> list[str]:
    """kurma-podinit's command line, without `-- CMD`; unset options are left to podinit.

    `grace` is `-g` (seconds); each (fd, app name) of `logs` is a `-f FD:NAME` (fd: the read
    end of the app's output pipe, inherited by podinit); `rotate` (max bytes, files kept) is
    `-l MAXBYTES:KEEP`; `reaper` is `-r CGROUP_PROCS`, the pod cgroup's `cgroup.procs` in one
    hierarchy (reaper mode: the pod shares the host's PID namespace, podinit is not PID 1).
    ValueError for what podinit would refuse as a usage error.
    """
    argv = [str(podinit_path())]
    if grace is not None:
        if not 0 <= grace <= 86400:
            raise ValueError(f"grace period out of 0..86400 s: {grace}")
        argv += ["-g", repr(float(grace))]
    if len(logs) > LOG_MAX_STREAMS:
        raise ValueError(f"at most {LOG_MAX_STREAMS} log streams, got {len(logs)}")
    if len({fd for fd, _ in logs}) != len(logs):
        raise ValueError(f"a log fd is given twice: {list(logs)}")
    for fd, name in logs:
        if fd <= 3 or not _is_log_name(name):
            raise ValueError(f"bad log stream {fd}:{name} (fd > 3, name of [a-z0-9-])")
        argv += ["-f", f"{fd}:{name}"]
    if rotate is not None:
        max_bytes, keep = rotate
        if not LOG_MIN_BYTES <= max_bytes <= LOG_MAX_BYTES or not 0 <= keep <= LOG_MAX_KEEP:
            raise ValueError(f"bad log rotation {max_bytes}:{keep}")
        argv += ["-l", f"{max_bytes}:{keep}"]
    if reaper is not None:
        if not reaper or reaper.endswith("/"):
            raise ValueError(f"-r needs a cgroup.procs file, got {reaper!r}")
        argv += ["-r", reaper]
    argv.append(str(pod_dir))
    return argv


_LOG_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def _is_log_name(name: str) -> bool:
    return 0 < len(name) <= LOG_NAME_MAX and set(name) <= _LOG_NAME_CHARS


def log_path(pod_dir: Path, app_name: str) -> Path:
    """Where podinit writes app `app_name`'s output (`-f FD:NAME`): `POD_DIR/logs/NAME.log`.

    That is the current file; rotated ones are `NAME.log.1` (the newest) to `NAME.log.KEEP`.
    """
    return pod_dir / LOGS_DIR / f"{app_name}.log"


def register_app(pod_dir: Path | int, pid: int, name: str) -> None:
    """Register `pid` (as seen inside the pod; a host pid in reaper mode) as app `name`.

    Must run before the process can be re-parented to podinit, i.e. in its in-pod parent
    before that parent exits. The name is for people; podinit only checks the file exists.
    `pod_dir` may be a directory descriptor of it (for callers in another mount namespace).
    """
    _write_atomic(pod_dir, "pids", pid, name)


def record_exit(pod_dir: Path | int, pid: int, code: int) -> None:
    """Write `exits/<pid>` = `<code>` the way podinit does (temp name + rename), then remove
    the registration `pids/<pid>`."""
    _write_atomic(pod_dir, "exits", pid, str(code))
    with _dir_fd(pod_dir) as fd, contextlib.suppress(FileNotFoundError):
        os.unlink(f"pids/{pid}", dir_fd=fd)


def _write_atomic(pod_dir: Path | int, sub: str, pid: int, text: str) -> None:
    with _dir_fd(pod_dir) as fd:
        write_atomic(f"{sub}/{pid}", f"{text}\n", sync=False, dir_fd=fd)


@contextlib.contextmanager
def _dir_fd(pod_dir: Path | int) -> Iterator[int]:
    """A descriptor of the pod directory: the one given, or one opened for the call."""
    if isinstance(pod_dir, int):
        yield pod_dir
        return
    fd = os.open(pod_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def wait_and_record(pod_dir: Path | int, pid: int) -> int:
    """Wait for our child `pid` (registered as `pids/<pid>`) to end, record it, reap it.

    For what podinit cannot reap because it is not the process's ancestor (a post-stop
    handler of a pod in the host's PID namespace). The record is written while the child is
    still a zombie, so its pid cannot have been reused by then. Returns the code.
    """
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    assert info is not None  # no WNOHANG: waitid returns once the child has ended
    code = info.si_status if info.si_code == os.CLD_EXITED else 128 + info.si_status
    record_exit(pod_dir, pid, code)
    os.waitpid(pid, 0)
    return code


def read_exit_records(pod_dir: Path) -> dict[int, int]:
    """The exit codes podinit recorded, by in-pod pid (the host pid in reaper mode): 0-255, or
    128+N for signal N."""
    records: dict[int, int] = {}
    try:
        entries = list(os.scandir(pod_dir / "exits"))
    except FileNotFoundError:
        return records
    for entry in entries:
        if entry.name.isdigit():
            try:
                records[int(entry.name)] = int(Path(entry.path).read_text())
            except (FileNotFoundError, ValueError):
                continue  # consumed meanwhile, or not a record
    return records


class Event(enum.Enum):
    """What a notification line reports."""

    READY = "ready"  # podinit is up: pids/ and exits/ exist, the initial app is registered
    EXIT = "exit"  # a registered app ended; its record is already in exits/


@dataclass(frozen=True)
class Notification:
    """One line from podinit's fd 3; pid and code are set for EXIT only."""

    event: Event
    pid: int = 0
    code: int = 0


def parse_notification(line: bytes) -> Notification:
    """Parse `ready` or `exit <pid> <code>` (trailing newline optional); ValueError otherwise."""
    fields = line.rstrip(b"\n").split(b" ")
    if fields == [b"ready"]:
        return Notification(Event.READY)
    if len(fields) == 3 and fields[0] == b"exit" and fields[1].isdigit() and fields[2].isdigit():
        return Notification(Event.EXIT, int(fields[1]), int(fields[2]))
    raise ValueError(f"not a podinit notification: {line!r}")
