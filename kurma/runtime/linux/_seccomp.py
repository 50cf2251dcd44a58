"""Seccomp filters from a retain-set (allow-list) or a remove-set (deny-list), over pyseccomp.

pyseccomp is a maintained ctypes binding of libseccomp; it is imported on first use so the
rest of the runtime imports on a system without libseccomp. Its errors are translated here,
in one place, into our OSError shape.

The filter is built with libseccomp's no_new_privs attribute off: loading it then needs
either no_new_privs (set by the caller, the os/linux/no-new-privileges isolator) or
CAP_SYS_ADMIN, and the app's choice about no_new_privs stays the app's. Load it last before
exec, once everything else that needs blocked syscalls is done; the filter must allow execve.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno as errnos
import functools
import tempfile
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any, TypeVar

from ._syscalls import _libc, check, fail

# What Docker's default profile (moby/profiles seccomp/default.json) leaves a container
# with the default capability set unable to call: syscalls on no allow rule, or allowed only
# with a capability outside Docker's default set (CAP_SYS_ADMIN, SYS_PTRACE, SYS_MODULE,
# SYS_TIME, SYS_NICE, SYS_RAWIO, SYS_BOOT, SYS_PACCT, SYSLOG, BPF, PERFMON, ...). Left
# out because a name alone cannot express them: `clone` (blocked only with namespace flags),
# `clone3` (answered with ENOSYS so glibc falls back to clone) and `personality` (allowed
# for a few personas). ptrace and process_vm_* are allowed on kernels from 4.8 on.
_DOCKER_DEFAULT_BLOCKED = frozenset(
    {
        "_sysctl",
        "acct",
        "add_key",
        "bpf",
        "clock_settime",
        "clock_settime64",
        "create_module",
        "delete_module",
        "fanotify_init",
        "finit_module",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "get_kernel_syms",
        "get_mempolicy",
        "init_module",
        "io_uring_enter",
        "io_uring_register",
        "io_uring_setup",
        "ioperm",
        "iopl",
        "kcmp",
        "kexec_file_load",
        "kexec_load",
        "keyctl",
        "lookup_dcookie",
        "mbind",
        "mount",
        "mount_setattr",
        "move_mount",
        "move_pages",
        "nfsservctl",
        "open_by_handle_at",
        "open_tree",
        "perf_event_open",
        "pidfd_getfd",
        "pivot_root",
        "process_madvise",
        "query_module",
        "quotactl",
        "quotactl_fd",
        "reboot",
        "request_key",
        "set_mempolicy",
        "set_mempolicy_home_node",
        "setdomainname",
        "sethostname",
        "setns",
        "settimeofday",
        "stime",
        "swapoff",
        "swapon",
        "sysfs",
        "syslog",
        "umount",
        "umount2",
        "unshare",
        "uselib",
        "userfaultfd",
        "ustat",
        "vhangup",
        "vm86",
        "vm86old",
    }
)

T = TypeVar("T")

_NR_SCMP_ERROR = -1  # libseccomp's answer for a name it does not know on any architecture

_pyseccomp: ModuleType | None = None


# What pyseccomp asks ctypes.util.find_library for, by soname. find_library runs
# `ldconfig -p` in a subprocess per name: ~0.1 s each under qemu without KVM, on the way to
# a booting machine's first pod. The dynamic loader finds a soname by itself.
_SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}


@contextlib.contextmanager
def _sonames_without_ldconfig() -> Iterator[None]:
    """While pyseccomp is imported: find_library answers _SONAMES that dlopen can load."""
    real = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        soname = _SONAMES.get(name)
        if soname is not None:
            try:
                ctypes.CDLL(soname)
                return soname
            except OSError:
                pass
        return real(name)

    ctypes.util.find_library = find_library
    try:
        yield
    finally:
        ctypes.util.find_library = real


def _lib() -> ModuleType:
    global _pyseccomp
    if _pyseccomp is None:
        try:
            with _sonames_without_ldconfig():
                import pyseccomp
        except (ImportError, OSError) as e:
            raise OSError(errnos.ENOSYS, f"seccomp unavailable: {e}") from e
        _pyseccomp = pyseccomp
    return _pyseccomp


def docker_default_blocked() -> frozenset[str]:
    """The syscall names Docker's default profile blocks (see the comment above)."""
    return _DOCKER_DEFAULT_BLOCKED


def resolve_syscall(name: str) -> int:
    """The native syscall number of `name` (negative for one only other architectures have)."""
    number = int(_lib().resolve_syscall(_lib().Arch.NATIVE, name))
    if number == _NR_SCMP_ERROR:
        raise ValueError(f"unknown syscall {name!r}")
    return number


class SeccompFilter:
    """A syscall filter: a default action plus per-syscall exceptions; `load()` installs it."""

    def __init__(self, default_action: int, exception_action: int, syscalls: Iterable[str]):
        self.syscalls = frozenset(syscalls)
        unknown = sorted(n for n in self.syscalls if _resolve_or_none(n) is None)
        if unknown:
            raise ValueError(f"unknown syscalls: {', '.join(unknown)}")
        lib = _lib()
        self._filter: Any = _translate("seccomp_init", lambda: lib.SyscallFilter(default_action))
        _translate("seccomp_attr_set", lambda: self._filter.set_attr(lib.Attr.CTL_NNP, 0))
        # The kernel's own errno from seccomp_load (EACCES, EINVAL) instead of ECANCELED.
        _translate("seccomp_attr_set", lambda: self._filter.set_attr(lib.Attr.API_SYSRAWRC, 1))
        for name in sorted(self.syscalls):
            add = functools.partial(self._filter.add_rule, exception_action, resolve_syscall(name))
            _translate("seccomp_rule_add", add, name)

    @classmethod
    def retain(cls, syscalls: Iterable[str], errno: int | None = errnos.EPERM) -> SeccompFilter:
        """Allow only `syscalls`; every other syscall fails with `errno` (None: SIGSYS kills
        the process)."""
        return cls(_blocked_action(errno), _lib().ALLOW, syscalls)

    @classmethod
    def remove(cls, syscalls: Iterable[str], errno: int | None = errnos.EPERM) -> SeccompFilter:
        """Allow everything except `syscalls`, which fail with `errno` (None: SIGSYS kills
        the process)."""
        return cls(_lib().ALLOW, _blocked_action(errno), syscalls)

    def load(self) -> None:
        """Install the filter in the calling thread (inherited by children and across exec).

        Needs no_new_privs set first, or CAP_SYS_ADMIN.
        """
        _translate("seccomp_load", self._filter.load)

    def bpf(self) -> bytes:
        """The compiled BPF program `load()` would install; `load_bpf` installs it later
        with one syscall (a forked app then never runs libseccomp's compiler)."""
        with tempfile.TemporaryFile() as f:
            _translate("seccomp_export_bpf", lambda: self._filter.export_bpf(f))
            f.seek(0)
            return f.read()

    def export_pfc(self, fileno: int) -> None:
        """Write the filter as readable pseudo-code to a file descriptor (for debugging)."""
        _translate("seccomp_export_pfc", lambda: self._filter.export_pfc(fileno))


def _blocked_action(errno: int | None) -> int:
    return _lib().KILL_PROCESS if errno is None else _lib().ERRNO(errno)


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


_SYS_SECCOMP = 317  # x86_64
_SECCOMP_SET_MODE_FILTER = 1
_BPF_INSTRUCTION = 8  # struct sock_filter


def load_bpf(program: bytes) -> None:
    """Install a compiled filter (from `SeccompFilter.bpf`) in the calling thread.

    Needs no_new_privs set first, or CAP_SYS_ADMIN, like `SeccompFilter.load`.
    """
    if not program or len(program) % _BPF_INSTRUCTION:
        raise ValueError(f"not a BPF program ({len(program)} bytes)")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // _BPF_INSTRUCTION, ctypes.addressof(buffer))
    result = _libc.syscall(_SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(fprog))
    check(result, "seccomp(SECCOMP_SET_MODE_FILTER)")


def _resolve_or_none(name: str) -> int | None:
    try:
        return resolve_syscall(name)
    except ValueError:
        return None


def _translate(what: str, call: Callable[[], T], target: str | None = None) -> T:
    """Run a pyseccomp call; its OSError becomes ours, naming what was attempted."""
    try:
        return call()
    except OSError as e:
        raise fail(what, target, e.errno or errnos.EINVAL) from e
