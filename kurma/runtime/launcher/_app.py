"""The forked app process: from a copy of the launcher to the app itself, by exec.

Runs single-threaded in a child that is already in the pod's pid, ipc, uts and net
namespaces. In this order: own cgroup, oom_score_adj and sysctls (through the host's /proc,
which shows the writer's namespaces), a mount namespace and root of its own, stdio, identity
and capabilities, no_new_privs, the pre-start handler, seccomp, exec. Any failure before the
exec is written to `errpipe` as "<code> <message>" and the process exits with that code
(125 setup, 126 not executable, 127 not found): the runtime reports it, and the exit record
says the same. The errpipe is close-on-exec, so EOF without data means the exec happened.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import signal
import termios
from dataclasses import dataclass
from typing import NoReturn

from .._identity import Identity
from .._plan import AppPlan, SeccompPlan
from .._rootfs import change_directory, prepare_app_rootfs
from ..linux import (
    CLONE_NEWCGROUP,
    CLONE_NEWNS,
    SeccompFilter,
    drop_capabilities,
    load_bpf,
    set_keepcaps,
    set_no_new_privs,
    unshare,
)

EXIT_SETUP_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


class AppStartError(Exception):
    """Why an app did not reach its exec; `code` is its exit status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class AppFds:
    """The descriptors the app process inherits from its launcher-side parent."""

    output: int  # stdout and stderr go here (a log pipe or an appended log file)
    errpipe: int  # close-on-exec; the reason of a failed start is written here
    ready: int = -1  # pod start barrier: write one byte when set up (multi-app pods)
    go: int = -1  # wait for EOF here before the exec: P1 became podinit (and the barrier)
    stdin: int = -1  # -1: /dev/null
    errors: int = -1  # stderr; -1: same as output
    tty: bool = False  # stdin is a terminal to make the controlling one (exec -t)


@functools.cache
def seccomp_filter(plan: SeccompPlan) -> bytes:
    """Compile each distinct filter once, before forking: children inherit the BPF program
    and install it with one syscall (`load_bpf`)."""
    if plan.mode == "retain":
        return SeccompFilter.retain(plan.syscalls, plan.errno).bpf()
    return SeccompFilter.remove(plan.syscalls, plan.errno).bpf()


def run_app(
    plan: AppPlan,
    fds: AppFds,
    argv: tuple[str, ...] | None = None,
    cgroup_procs: tuple[str, ...] = (),
    *,
    in_app_root: bool = False,
    extra_env: tuple[tuple[str, str], ...] = (),
) -> NoReturn:
    """Become the app (or one of its handlers when `argv` is given); never returns.

    `in_app_root`: the caller already joined the running app's mount namespace (exec), so
    no root is built; only the working directory is entered.
    """
    try:
        _reset_signals()
        for procs in cgroup_procs:
            write_control_file(procs, "0")
        filt = prepare_process(plan, fds, in_app_root=in_app_root)
        env = dict(plan.env) | dict(extra_env)
        if argv is None and plan.pre_start is not None:
            _run_handler(plan, "pre-start", plan.pre_start, env, filt)
        if fds.ready >= 0:
            os.write(fds.ready, b"r")
            os.close(fds.ready)
        if fds.go >= 0:  # the pod's PID 1 execs kurma-podinit (and every pre-start ran)
            _wait_for_go(fds.go)
        _exec(argv or plan.argv, env, filt)
    except AppStartError as e:
        _fail(fds.errpipe, e.code, str(e))
    except BaseException as e:  # anything at all: the process must not return into Python
        _fail(fds.errpipe, EXIT_SETUP_FAILED, f"app {plan.name!r}: {_describe(e)}")


def prepare_process(plan: AppPlan, fds: AppFds, *, in_app_root: bool = False) -> bytes | None:
    """Everything up to the handlers and the exec; returns the seccomp filter still to load.

    The filter goes on as late as possible, just before the exec, so it needs to allow no
    syscall of ours. Without no_new_privs the kernel lets only CAP_SYS_ADMIN load a filter,
    so then it goes on before the capabilities are dropped (as runc does) and must allow
    what follows (capset, setresuid, prctl ...).
    """
    filt = seccomp_filter(plan.seccomp) if plan.seccomp is not None else None
    if plan.oom_score_adj is not None:
        write_control_file("/proc/self/oom_score_adj", str(plan.oom_score_adj))
    null = os.open("/dev/null", os.O_RDONLY) if fds.stdin < 0 else fds.stdin
    if in_app_root:
        change_directory(plan.name, plan.rootfs.working_directory)
    else:
        for key, value in plan.sysctls:  # once per app is enough: the namespaces are shared
            write_control_file("/proc/sys/" + key.replace(".", "/"), value)
        unshare(CLONE_NEWNS)
        prepare_app_rootfs(plan.rootfs)
        if plan.rootfs.own_cgroups:  # after the binds were read in the host's view
            unshare(CLONE_NEWCGROUP)
    errors = fds.output if fds.errors < 0 else fds.errors
    os.dup2(null, 0)
    os.dup2(fds.output, 1)
    os.dup2(errors, 2)
    for fd in {null, fds.output, errors} - {0, 1, 2}:
        os.close(fd)
    os.setsid()
    if fds.tty:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if filt is not None and not plan.no_new_privileges:
        load_bpf(filt)
        filt = None
    become(plan.identity, plan.capabilities, plan.ambient)
    if plan.no_new_privileges:
        set_no_new_privs()
    return filt


def become(identity: Identity, capabilities: frozenset[int], ambient: bool) -> None:
    """Switch to the app's uid/gids with exactly `capabilities` left.

    root keeps them in every set. Another user keeps them only in the bounding set (as
    Docker does), unless `ambient` (an explicit retain-set, or privileged): then they stay
    effective across the exec through the ambient set.
    """
    os.setgroups(list(identity.groups))
    os.setresgid(identity.gid, identity.gid, identity.gid)
    if identity.uid == 0:
        drop_capabilities(capabilities)
        return
    if ambient:
        set_keepcaps(True)
        os.setresuid(identity.uid, identity.uid, identity.uid)
        drop_capabilities(capabilities)
    else:
        drop_capabilities(capabilities)
        os.setresuid(identity.uid, identity.uid, identity.uid)  # clears permitted, effective


def _run_handler(
    plan: AppPlan,
    which: str,
    argv: tuple[str, ...],
    env: dict[str, str],
    filt: bytes | None,
) -> None:
    """Run an event handler to completion in this root; a non-zero exit fails the start."""
    pid = os.fork()
    if pid == 0:
        try:
            _exec(argv, env, filt)
        except AppStartError as e:
            os.write(2, f"{which} handler: {e}\n".encode())
            os._exit(e.code)
        except BaseException:
            os._exit(EXIT_SETUP_FAILED)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        shown = f"signal {-code}" if code < 0 else f"status {code}"
        raise AppStartError(
            EXIT_SETUP_FAILED, f"app {plan.name!r}: {which} handler {argv[0]!r} exited with {shown}"
        )


def _exec(argv: tuple[str, ...], env: dict[str, str], filt: bytes | None) -> NoReturn:
    """Load seccomp as the very last step, then exec through the app's PATH."""
    if filt is not None:
        load_bpf(filt)
    try:
        os.execvpe(argv[0], list(argv), env)
    except FileNotFoundError:
        raise AppStartError(
            EXIT_NOT_FOUND, f"{argv[0]!r}: no such file in the app's PATH ({env.get('PATH', '')})"
        ) from None
    except PermissionError:
        raise AppStartError(EXIT_NOT_EXECUTABLE, f"{argv[0]!r}: not executable") from None
    except OSError as e:
        raise AppStartError(EXIT_NOT_EXECUTABLE, f"exec {argv[0]!r}: {e.strerror}") from None


def _wait_for_go(fd: int) -> None:
    """Take this app's byte from the pod's P1, written just before it execs kurma-podinit
    (see `_spawn._exec_podinit`). EOF without a byte: P1 failed (it said why on the first
    app's errpipe), and the app must not run."""
    if os.read(fd, 1) != b"g":
        raise AppStartError(EXIT_SETUP_FAILED, "the pod's init did not start")
    os.close(fd)


def _reset_signals() -> None:
    """What a fresh process has: default dispositions (Python ignores SIGPIPE), no mask."""
    signal.set_wakeup_fd(-1)
    for sig in (
        signal.SIGPIPE,
        signal.SIGXFSZ,
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGCHLD,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
    ):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def write_control_file(path: str, value: str) -> None:
    """Write a small value to a kernel control file (cgroup.procs, /proc/sys ...)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    except OSError as e:
        raise OSError(e.errno, f"writing {value!r} to {path}: {e.strerror}", path) from None
    finally:
        os.close(fd)


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror if e.filename is None else f"{e.strerror} ({e.filename})"
    return f"{type(e).__name__}: {e}"


def _fail(errpipe: int, code: int, message: str) -> NoReturn:
    """Tell the runtime (errpipe) and the app's log (stderr), then exit with `code`."""
    data = f"{code} {message}\n".encode()
    for fd in (errpipe, 2):
        with contextlib.suppress(OSError):
            os.write(fd, data if fd == errpipe else f"kurma: {message}\n".encode())
    os._exit(code)


def parse_start_error(data: bytes) -> tuple[int, str] | None:
    """Read what `_fail` wrote; None for an empty pipe (the exec happened)."""
    if not data:
        return None
    code, _, message = data.decode(errors="replace").rstrip("\n").partition(" ")
    try:
        return int(code), message
    except ValueError:
        return EXIT_SETUP_FAILED, data.decode(errors="replace")


__all__ = ["AppFds", "AppStartError", "become", "parse_start_error", "run_app"]
