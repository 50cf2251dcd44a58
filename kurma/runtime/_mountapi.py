"""The fd-based mount API (open_tree, move_mount, mount_setattr) and openat2, over ctypes.

Why these and not only mount(2): a bind made with open_tree + mount_setattr is read-only
*before* it is attached (mount(2) needs a second, racy remount), `AT_RECURSIVE` makes a whole
recursive bind read-only in one call (mount(2) ignores MS_REC on a remount), and move_mount
attaches onto an O_PATH fd, so a target resolved safely inside a rootfs is never looked up
by name again. openat2's RESOLVE_IN_ROOT resolves symlinks as if a directory were `/`
(mount targets in an app's root); RESOLVE_BENEATH refuses (EXDEV) whatever leads out of a
directory, RESOLVE_NO_MAGICLINKS (ELOOP) /proc's magic links, RESOLVE_NO_XDEV (EXDEV) any
mount crossed (host sources that a pod named, below its creator's volume: `_volumes`).
A path with a NUL byte is EINVAL here: C would silently cut it short.

These syscalls came after the unified syscall table, so their numbers are the same on every
architecture we run on (Linux >= 5.2 for open_tree/move_mount, 5.6 for openat2, 5.12 for
mount_setattr; the VM has 6.1, the host 6.18).
"""

from __future__ import annotations

import ctypes
import errno
import os

_libc = ctypes.CDLL(None, use_errno=True)

_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_OPENAT2 = 437
_SYS_MOUNT_SETATTR = 442

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x04
MOVE_MOUNT_T_EMPTY_PATH = 0x40

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _fail(what: str, target: object) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what} failed: {os.strerror(err)}", str(target))


def _c_path(path: str) -> bytes:
    """`path` for a C call; EINVAL for a NUL byte (C would cut the path short there)."""
    data = os.fsencode(path)
    if b"\0" in data:
        raise OSError(errno.EINVAL, "a path with a NUL byte", path)
    return data


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open `path` relative to `dirfd` under the RESOLVE_* rules; O_CLOEXEC added."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dirfd),
        _c_path(path),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        raise _fail("openat2", path)
    return int(fd)


def open_tree(dirfd: int, path: str, flags: int) -> int:
    """open_tree(2): with OPEN_TREE_CLONE, a detached copy of a mount (tree) as an fd."""
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPEN_TREE),
        ctypes.c_int(dirfd),
        _c_path(path),
        ctypes.c_uint(flags | os.O_CLOEXEC),
    )
    if fd < 0:
        raise _fail("open_tree", path or f"fd {dirfd}")
    return int(fd)


def move_mount(from_fd: int, to_fd: int, what: object = None) -> None:
    """move_mount(2) of the detached mount `from_fd` onto the object `to_fd` refers to."""
    result = _libc.syscall(
        ctypes.c_long(_SYS_MOVE_MOUNT),
        ctypes.c_int(from_fd),
        b"",
        ctypes.c_int(to_fd),
        b"",
        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH),
    )
    if result < 0:
        raise _fail("move_mount", what if what is not None else f"fd {to_fd}")


def mount_setattr(fd: int, attr_set: int, recursive: bool = False, what: object = None) -> None:
    """mount_setattr(2) on the mount `fd` refers to (and every mount below it if recursive)."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    result = _libc.syscall(
        ctypes.c_long(_SYS_MOUNT_SETATTR),
        ctypes.c_int(fd),
        b"",
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    if result < 0:
        raise _fail("mount_setattr", what if what is not None else f"fd {fd}")


def bind_clone(
    source_fd: int, target_fd: int, *, recursive: bool, attrs: int = 0, what: object = None
) -> None:
    """Bind what `source_fd` refers to onto `target_fd`, with `attrs` set before attaching."""
    flags = AT_EMPTY_PATH | OPEN_TREE_CLONE | (AT_RECURSIVE if recursive else 0)
    tree = open_tree(source_fd, "", flags)
    try:
        if attrs:
            mount_setattr(tree, attrs, recursive, what)
        move_mount(tree, target_fd, what)
    finally:
        os.close(tree)


def fd_path(fd: int) -> str:
    """The magic-link path of an fd, usable as a mount(2) source or target."""
    return f"/proc/self/fd/{fd}"
