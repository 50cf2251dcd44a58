"""Namespaces, mounts, pivot_root and hostname: the syscalls Python 3.11 has no wrapper for.

Every wrapper calls libc through ctypes with `use_errno=True` and turns a failure into
`OSError(errno, "<what> failed: <strerror>", target)`, the shape pyroute2 uses, so a caller
can match on `e.errno` and a log line says what was attempted on which path.
"""

from __future__ import annotations

import ctypes
import enum
import os
import platform

_libc = ctypes.CDLL(None, use_errno=True)

# glibc has no pivot_root() wrapper; the syscall number differs per architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}


def fail(what: str, target: object = None, err: int | None = None) -> OSError:
    """Build the OSError for a failed call: errno, what was attempted, and its target."""
    err = ctypes.get_errno() if err is None else err
    message = f"{what} failed: {os.strerror(err)}"
    if target is None:
        return OSError(err, message)
    return OSError(err, message, os.fsdecode(target) if isinstance(target, bytes) else target)


def check(result: int, what: str, target: object = None) -> int:
    """Raise `fail(what, target)` when a libc call returned -1; otherwise pass its result on."""
    if result == -1:
        raise fail(what, target)
    return result


def _path(value: str | os.PathLike[str] | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


class Namespace(enum.IntFlag):
    """The CLONE_NEW* flags, one per namespace kind; `proc_name` is its /proc/PID/ns entry."""

    TIME = 0x00000080
    MNT = 0x00020000
    CGROUP = 0x02000000
    UTS = 0x04000000
    IPC = 0x08000000
    USER = 0x10000000
    PID = 0x20000000
    NET = 0x40000000

    @property
    def proc_name(self) -> str:
        """The file name under /proc/PID/ns for a single namespace kind."""
        return _PROC_NS_NAMES[self]


_PROC_NS_NAMES = {
    Namespace.TIME: "time",
    Namespace.MNT: "mnt",
    Namespace.CGROUP: "cgroup",
    Namespace.UTS: "uts",
    Namespace.IPC: "ipc",
    Namespace.USER: "user",
    Namespace.PID: "pid",
    Namespace.NET: "net",
}

CLONE_NEWTIME = Namespace.TIME
CLONE_NEWNS = Namespace.MNT
CLONE_NEWCGROUP = Namespace.CGROUP
CLONE_NEWUTS = Namespace.UTS
CLONE_NEWIPC = Namespace.IPC
CLONE_NEWUSER = Namespace.USER
CLONE_NEWPID = Namespace.PID
CLONE_NEWNET = Namespace.NET


class MountFlags(enum.IntFlag):
    """mount(2) flags (<sys/mount.h>)."""

    NONE = 0
    RDONLY = 1
    NOSUID = 2
    NODEV = 4
    NOEXEC = 8
    SYNCHRONOUS = 16
    REMOUNT = 32
    MANDLOCK = 64
    DIRSYNC = 128
    NOSYMFOLLOW = 256
    NOATIME = 1024
    NODIRATIME = 2048
    BIND = 4096
    MOVE = 8192
    REC = 16384
    SILENT = 32768
    POSIXACL = 1 << 16
    UNBINDABLE = 1 << 17
    PRIVATE = 1 << 18
    SLAVE = 1 << 19
    SHARED = 1 << 20
    RELATIME = 1 << 21
    STRICTATIME = 1 << 24
    LAZYTIME = 1 << 25


MS_RDONLY = MountFlags.RDONLY
MS_NOSUID = MountFlags.NOSUID
MS_NODEV = MountFlags.NODEV
MS_NOEXEC = MountFlags.NOEXEC
MS_REMOUNT = MountFlags.REMOUNT
MS_NOATIME = MountFlags.NOATIME
MS_BIND = MountFlags.BIND
MS_MOVE = MountFlags.MOVE
MS_REC = MountFlags.REC
MS_UNBINDABLE = MountFlags.UNBINDABLE
MS_PRIVATE = MountFlags.PRIVATE
MS_SLAVE = MountFlags.SLAVE
MS_SHARED = MountFlags.SHARED
MS_RELATIME = MountFlags.RELATIME
MS_STRICTATIME = MountFlags.STRICTATIME

# umount2(2) flags.
MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces (CLONE_NEW* flags)."""
    check(_libc.unshare(ctypes.c_int(int(flags))), "unshare", f"flags={int(flags):#x}")


def setns(ns: int | str | os.PathLike[str], nstype: int = 0) -> None:
    """Join a namespace, given an open fd or a path such as /proc/PID/ns/uts.

    `nstype` 0 accepts any kind; a CLONE_NEW* value makes the kernel check the kind.
    Joining a mount namespace needs a single-threaded caller (EINVAL otherwise).
    """
    if isinstance(ns, int):
        check(_libc.setns(ns, ctypes.c_int(int(nstype))), "setns", f"fd {ns}")
        return
    fd = os.open(ns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(_libc.setns(fd, ctypes.c_int(int(nstype))), "setns", os.fspath(ns))
    finally:
        os.close(fd)


def ns_path(pid: int | str, kind: Namespace) -> str:
    """The /proc path of a process's namespace of one kind ("self" for the caller)."""
    return f"/proc/{pid}/ns/{kind.proc_name}"


def mount(
    source: str | os.PathLike[str] | None,
    target: str | os.PathLike[str],
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2). `source`, `fstype` and `data` may be None (propagation changes, remounts)."""
    result = _libc.mount(
        _path(source),
        _path(target),
        None if fstype is None else fstype.encode(),
        ctypes.c_ulong(int(flags)),
        None if data is None else data.encode(),
    )
    check(result, "mount", os.fspath(target))


def umount2(target: str | os.PathLike[str], flags: int = 0) -> None:
    """umount2(2); MNT_DETACH for a lazy unmount of a busy tree."""
    check(_libc.umount2(_path(target), ctypes.c_int(flags)), "umount2", os.fspath(target))


def make_rprivate(path: str | os.PathLike[str] = "/") -> None:
    """Make every mount at and under `path` private, so nothing propagates out or in.

    pivot_root refuses shared mounts, and a Debian host (systemd) makes / shared.
    """
    mount(None, path, None, MS_REC | MS_PRIVATE)


def pivot_root(new_root: str | os.PathLike[str], put_old: str | os.PathLike[str]) -> None:
    """pivot_root(2): `new_root` must be a mount point, neither it nor its parent shared."""
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(38, f"pivot_root failed: no syscall number for {platform.machine()}")
    result = _libc.syscall(ctypes.c_long(number), _path(new_root), _path(put_old))
    check(result, "pivot_root", os.fspath(new_root))


def sethostname(name: str) -> None:
    """Set the hostname of the caller's UTS namespace (the host's, unless unshared)."""
    raw = name.encode()
    check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname", name)
