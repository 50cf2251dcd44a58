"""PID 1's mounts: leaving the initramfs root, the system mounts, reading mountinfo.

Why leave the initramfs: the kernel's rootfs is the root of the mount tree, and pivot_root(2)
refuses to move it (EINVAL), so no container could pivot_root while / is the rootfs. The
remedy (DESIGN.md): make / private recursively (the VM kernel may start with shared
propagation, which pivot_root also refuses), bind / recursively onto a directory of its own,
move that mount onto /, and chroot into it. The files stay the same (no copy); only the mount
that / is changes.

Every system mount is idempotent: a target that already has a mount of the same type is left
alone, so running the step twice, or after the kernel automounted devtmpfs, changes nothing.
Paths take a `root` prefix so tests can mount into a directory of a private mount namespace.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

from ..mountinfo import unescape as _unescape
from ..runtime.linux import (
    MS_BIND,
    MS_MOVE,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_REC,
    MS_RELATIME,
    make_rprivate,
    mount,
)

log = logging.getLogger(__name__)

INITRAMFS_TYPES = frozenset({"rootfs", "ramfs", "tmpfs"})
NEWROOT = "/newroot"


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo, as far as PID 1 needs it."""

    mount_id: int
    parent_id: int
    mountpoint: str
    fstype: str
    source: str
    options: str


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Every mount in the order of /proc/self/mountinfo (parents before children)."""
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 2:
            continue
        entries.append(
            MountEntry(
                int(fields[0]),
                int(fields[1]),
                _unescape(fields[4]),
                tail[0],
                _unescape(tail[1]),
                fields[5],
            )
        )
    return entries


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def mounted_type(target: str, entries: Iterable[MountEntry] | None = None) -> str | None:
    """The type of the topmost mount at `target`, or None when nothing is mounted there."""
    found = None
    for entry in read_mountinfo() if entries is None else entries:
        if entry.mountpoint == target:
            found = entry.fstype  # later lines are mounted over earlier ones
    return found


# --- leaving the initramfs -------------------------------------------------------------------


def on_initramfs(entries: Iterable[MountEntry] | None = None) -> bool:
    """Whether / is the kernel's initramfs itself (rootfs, or ramfs/tmpfs as some kernels show
    it), not yet left: the namespace's first mount is its own parent. Once left (here or by
    the initrd's first stage), / is a bind of it, whose parent is hidden below."""
    root = None
    for entry in read_mountinfo() if entries is None else entries:
        if entry.mountpoint == "/":
            root = entry
    return root is not None and root.fstype in INITRAMFS_TYPES and root.mount_id == root.parent_id


def leave_initramfs(newroot: str = NEWROOT) -> None:
    """Make / a mount that pivot_root accepts: rprivate, rbind to `newroot`, move onto /, chroot.

    The caller's cwd ends at the new /; `newroot` (a directory on the old root) is removed.
    """
    make_rprivate("/")
    os.makedirs(newroot, exist_ok=True)
    mount("/", newroot, None, MS_BIND | MS_REC)
    os.chdir(newroot)
    mount(".", "/", None, MS_MOVE)
    os.chroot(".")
    os.chdir("/")
    try:
        os.rmdir(newroot)  # the same directory, seen through the new mount: empty again
    except OSError as e:
        log.debug("leaving %s in place: %s", newroot, e)


# --- the system mounts -----------------------------------------------------------------------


@dataclass(frozen=True)
class SystemMount:
    """A kernel filesystem PID 1 mounts at boot; `mode` is the mount point's mode if created."""

    target: str
    fstype: str
    flags: int = 0
    data: str | None = None
    mode: int = 0o755
    optional: bool = False  # a kernel without it boots all the same

    @property
    def source(self) -> str:
        return self.fstype


_SAFE = MS_NOSUID | MS_NODEV | MS_NOEXEC

PROC = SystemMount("/proc", "proc", _SAFE | MS_RELATIME)
SYSTEM_MOUNTS: tuple[SystemMount, ...] = (
    PROC,
    SystemMount("/sys", "sysfs", _SAFE | MS_RELATIME),
    SystemMount("/dev", "devtmpfs", MS_NOSUID | MS_RELATIME, "mode=0755"),
    # the machine's own devpts (pods get their own instances); ptmx usable by everyone
    SystemMount("/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666"),
    SystemMount("/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 0o1777),
    SystemMount("/dev/mqueue", "mqueue", _SAFE, optional=True),
    SystemMount("/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"),
    SystemMount("/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 0o1777),
    SystemMount("/sys/fs/cgroup", "cgroup2", _SAFE | MS_RELATIME, "nsdelegate"),
    SystemMount("/sys/kernel/security", "securityfs", _SAFE, optional=True),
    SystemMount("/sys/fs/bpf", "bpf", _SAFE, "mode=0700", 0o700, optional=True),
)


def mount_system(root: str = "/", mounts: Iterable[SystemMount] = SYSTEM_MOUNTS) -> list[str]:
    """Mount what is not mounted yet (under `root`); returns the targets mounted now.

    An optional mount the kernel cannot do (ENODEV: not built in) is logged and skipped;
    any other failure raises OSError naming the target.
    """
    done = []
    for m in mounts:
        target = os.path.join(root, m.target.lstrip("/"))
        if _has_proc() and mounted_type(os.path.normpath(target)) == m.fstype:
            continue
        try:
            os.makedirs(target, mode=m.mode, exist_ok=True)
            mount(m.source, target, m.fstype, m.flags, m.data)
        except OSError as e:
            if m.optional:
                log.info("optional mount %s (%s) skipped: %s", target, m.fstype, e.strerror)
                continue
            raise
        done.append(target)
    return done


def _has_proc() -> bool:
    return os.path.exists("/proc/self/mountinfo")  # not yet in PID 1's first moments


def enable_controllers(cgroup_root: str = "/sys/fs/cgroup") -> list[str]:
    """Enable every controller of the root cgroup for its children (cgroup.subtree_control).

    Returns the controllers enabled. A controller the kernel refuses (EBUSY, EINVAL) is logged
    and left out; the others still go in (one write each, so one refusal does not stop all).
    """
    with open(os.path.join(cgroup_root, "cgroup.controllers")) as f:
        available = f.read().split()
    enabled = []
    for name in available:
        try:
            with open(os.path.join(cgroup_root, "cgroup.subtree_control"), "w") as f:
                f.write(f"+{name}")
            enabled.append(name)
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.EINVAL, errno.ENOENT, errno.EOPNOTSUPP):
                raise
            log.warning("cgroup controller %s not enabled: %s", name, e.strerror)
    return enabled
